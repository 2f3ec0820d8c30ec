"""The modelhub SDK's modules (httpx only, never a server module); `graphql_api.client` is its public face.

| module | what it owns |
|---|---|
| `errors` | `ModelhubError` and its subclasses, by the codes of `graphql_api.codes` |
| `types` | the typed results: frozen dataclasses read from GraphQL answers |
| `documents` | the GraphQL documents the SDK sends |
| `files` | hashing, upload slices, a download's `.part` file and the sink that writes it |
| `transport` | the steps flows yield, the headers sent, answers read into data or typed errors |
| `flows` | each operation once, as the steps it takes |
| `sync`, `aio` | `ModelhubClient` and `AsyncModelhubClient`: the same flows run, or awaited |
"""
