"""The REST routes, one module per resource, gathered into one router."""

from fastapi import APIRouter

from api.routes import analyze, batches, documents, health, jobs, metrics, services

rest_routes = APIRouter()
for module in (jobs, batches, documents, analyze, metrics, services, health):
    rest_routes.include_router(module.router)
