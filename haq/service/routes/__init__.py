"""The service's routes, one module per resource: jobs, their results, tables and device agents.
Each builds an :class:`~fastapi.APIRouter` over the :class:`~haq.service.routes.shared.Service`
it is given; :func:`haq.service.app.create_app` puts the bearer-token check in front of them."""
