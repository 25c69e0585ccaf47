"""The workbench's routes, one APIRouter per area: pages (sessions and browsing), review
(the queue, explanations, labels), admin (users, API keys, retraining), api (scoring with an
API key) and operations (health and metrics)."""
