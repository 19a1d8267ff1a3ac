"""Device enrolment over EST: services, routes, TLS listener, device side."""
