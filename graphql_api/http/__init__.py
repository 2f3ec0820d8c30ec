"""The plain HTTP edge beside GraphQL: routes, the streaming response, Range handling and JSON errors."""
