"""The GraphQL documents the SDK sends (each the fields its typed result reads)."""

from __future__ import annotations

# What `ModelVersion.from_graphql` reads.
VERSION_FIELDS = """id name version projectName owner description tags metadata sizeBytes etag
      contentType sha256 checksumStatus checksumError storageUri createdAt archived aliases downloadCount
      lastDownloadedAt"""
ERROR_FIELDS = "... on UserError { __typename code message } ... on InvalidInput { field }"


def mutation_document(operation: str, success: str) -> str:
    """The mutation `operation` (field `operation` in camelCase, input `<operation>Input`) with its result
    union's `success` member and the shared error types."""
    field = operation[0].lower() + operation[1:]
    return f"""
mutation {operation}($input: {operation}Input!) {{
  {field}(input: $input) {{
    __typename
    {success}
    {ERROR_FIELDS}
  }}
}}"""


REPORT_VERIFICATION = mutation_document(
    "ReportDownloadVerification", "... on DownloadEvent { id sha256Matches }"
)
REQUEST_DOWNLOAD = mutation_document(
    "RequestDownload",
    "... on DownloadTicket { url mode expiresAt "
    "download { id version sizeBytes modelVersion { etag sha256 checksumStatus } } }",
)
REGISTER = mutation_document("RegisterModel", f"... on ModelVersion {{ {VERSION_FIELDS} }}")
REQUEST_UPLOAD = mutation_document(
    "RequestUpload",
    "... on UploadTicket { uploadId url headers { name value } parts { partNumber url sizeBytes } "
    "partSizeBytes expiresAt }",
)
COMPLETE_UPLOAD = mutation_document("CompleteUpload", f"... on ModelVersion {{ {VERSION_FIELDS} }}")
PROJECT_FIELDS = "... on Project { name visibility grants { project principal role } }"
SET_PROJECT_VISIBILITY = mutation_document("SetProjectVisibility", PROJECT_FIELDS)
GRANT_PROJECT_ROLE = mutation_document("GrantProjectRole", PROJECT_FIELDS)
REVOKE_PROJECT_ROLE = mutation_document("RevokeProjectRole", PROJECT_FIELDS)
CREATE_TOKEN = mutation_document(
    "CreateToken", "... on CreatedToken { token apiToken { name principal role grants { project role } } }"
)
GRANTS = "query Grants($project: String) { grants(project: $project) { project principal role } }"
REGISTER_OPERATIONS = mutation_document(
    "RegisterOperations",
    "... on RegisteredOperations { operations { sha256Hash name created } }",
)

MODELS = """
query ListModels($first: Int!, $after: String, $filter: ModelFilter) {
  models(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage endCursor }
    nodes {
      name projectName owner description tags createdAt updatedAt downloadCount
      latestVersion { version sizeBytes sha256 checksumStatus }
      aliases { alias version }
    }
  }
}"""

INFO = f"""
query Info($name: String!, $version: Int, $alias: String) {{
  modelVersion(name: $name, version: $version, alias: $alias) {{
    {VERSION_FIELDS}
    model {{ description downloadCount aliases {{ alias version }} }}
  }}
  model(name: $name) {{ name }}
}}"""

STATS = """
query Stats(
  $groupBy: [DownloadDimension!]!, $interval: TimeInterval, $filter: DownloadFilter, $after: String
) {
  downloadStats(groupBy: $groupBy, interval: $interval, filter: $filter, limit: 1000, after: $after,
                orderBy: {field: DOWNLOADS, direction: DESC}) {
    source
    pageInfo { hasNextPage endCursor }
    rows { modelName version projectName engineer mode status periodStart downloads completed aborted failed
           totalBytes uniqueEngineers avgDurationSeconds p95DurationSeconds }
  }
}"""

DOCUMENTS = {
    "REGISTER_OPERATIONS": REGISTER_OPERATIONS,
    "REQUEST_DOWNLOAD": REQUEST_DOWNLOAD,
    "REGISTER": REGISTER,
    "REQUEST_UPLOAD": REQUEST_UPLOAD,
    "COMPLETE_UPLOAD": COMPLETE_UPLOAD,
    "MODELS": MODELS,
    "INFO": INFO,
    "STATS": STATS,
}
