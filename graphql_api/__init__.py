"""modelhub: a GraphQL registry for ML model artifacts stored in S3, with download analytics."""

__version__ = "0.1.0"
