"""The Faust app for `faust -A registry_app.app worker`, built from the environment."""

from registry_app.registry import Registry
from registry_app.settings import load_settings

registry = Registry(load_settings())
app = registry.app
