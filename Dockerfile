FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MAILHUB_VAR_DIR=/data
WORKDIR /app
RUN useradd --system --create-home mailhub && mkdir -p /data && chown mailhub /data

COPY pyproject.toml ./
RUN pip install --no-cache-dir --upgrade pip
COPY . .
RUN pip install --no-cache-dir . && python -c "import django"

USER mailhub
EXPOSE 8000
CMD ["gunicorn", "-c", "python:mailhub.gunicorn_conf", "mailhub.wsgi", "--bind", "0.0.0.0:8000"]
