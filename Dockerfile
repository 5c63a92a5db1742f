# The one image for every process of the engine (web, worker, scheduler, release); the command
# picks the process, as in the Procfile. Build: docker build -t energy-engine .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    WEB_HOST=0.0.0.0

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Nothing here needs root.
RUN useradd --system --uid 10001 --no-create-home app
USER app

EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "web:create_app()"]
