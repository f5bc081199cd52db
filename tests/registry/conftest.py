"""Registry fixtures (defined in fixtures.py so other test packages can import them too)."""

from tests.registry.fixtures import aws_env, moto_endpoint, registry_uri, s3_uri  # noqa: F401
