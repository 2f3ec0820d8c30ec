"""What a scope costs a models page from the in-memory catalogue: a caller without a global role reads its
projects (every INTERNAL one and its grants), so its pages are filtered by a list of project names.

Usage: python -m bench.scoped_pages [--models 5000]

Fills a catalogue in memory (no database) with `--models` models spread over 10, 100 and 1,000 projects and
prints the mean time of a first page of 20 (newest first) and of its totalCount, unfiltered (a caller with a
global role) and filtered by every project's name (a caller without one, in the worst case: every project
readable).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from graphql_api.catalogue import Catalogue
from graphql_api.pagination import PageRequest
from graphql_api.queries import ModelOrder, ModelQuery


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=5000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    for projects in (10, 100, 1000):
        catalogue = Catalogue()
        catalogue._replace(
            [
                {"_id": ObjectId(), "name": f"m{i:06d}", "project_name": f"p{i % projects}", "owner": "o",
                 "tags": [], "created_at": now - timedelta(seconds=i), "updated_at": now}
                for i in range(args.models)
            ]
        )  # fmt: skip
        names = sorted(f"p{i}" for i in range(projects))
        for label, query in (
            ("global role", ModelQuery()),
            ("every project named", ModelQuery(project_names=names)),
        ):
            started = time.perf_counter()
            for _ in range(50):
                catalogue.page(query, ModelOrder(), PageRequest(first=20))
            page_ms = (time.perf_counter() - started) / 50 * 1000
            started = time.perf_counter()
            catalogue.page(query, ModelOrder(), PageRequest(first=20)).count()
            count_ms = (time.perf_counter() - started) * 1000
            print(
                f"{args.models} models, {projects:4d} projects, {label:19s}: page {page_ms:5.2f} ms, "
                f"totalCount {count_ms:5.1f} ms"
            )


if __name__ == "__main__":
    main()
