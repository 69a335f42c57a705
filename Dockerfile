FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs settings, not a database or a real secret
RUN SECRET_KEY=collectstatic-only-not-secret python manage.py collectstatic --noinput -v0
USER nobody
EXPOSE 8080
CMD ["gunicorn", "notifications_project.wsgi", "--bind", "0.0.0.0:8080", "--workers", "4"]
