# modelhub API image: the app without the embedded database (compose gives it MongoDB and MinIO).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# The server's locked versions first (their layer is cached until the lock changes), checked by hash; then
# modelhub itself without resolving anything more.
COPY requirements/server.txt ./requirements/server.txt
RUN pip install --require-hashes -r requirements/server.txt
COPY pyproject.toml README.md ./
COPY graphql_api ./graphql_api
RUN pip install --no-deps . && useradd --create-home --uid 10001 modelhub && mkdir /data && chown modelhub /data
USER modelhub
ENV MODELHUB_DATA_DIR=/data MODELHUB_HOST=0.0.0.0 MODELHUB_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["modelhub", "serve", "--host", "0.0.0.0", "--port", "8000"]
