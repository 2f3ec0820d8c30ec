"""`python -m graphql_api.cli`: the `modelhub` command."""

from . import main

main()
