"""Every model of ours has a factory (`<app>/factories.py`, factory_boy) that builds and saves valid rows.

It sits in the top layer because it reads every app's factories."""

import configparser
import importlib
import inspect

import factory
import pytest
from django.apps import apps

from core.processes import BASE_DIR


def _our_apps() -> list:
    """The project's packages, as .importlinter lists them, that are Django apps."""
    config = configparser.ConfigParser()
    config.read(BASE_DIR / ".importlinter")
    names = config["importlinter"]["root_packages"].split()
    return [apps.get_app_config(name) for name in names if apps.is_installed(name)]


def _factories_of(app_config) -> dict[type, type]:
    """{model: factory} from the app's factories module ({} where the app has no such module)."""
    try:
        module = importlib.import_module(f"{app_config.name}.factories")
    except ModuleNotFoundError as exc:
        if exc.name != f"{app_config.name}.factories":
            raise
        return {}
    return {
        value._meta.get_model_class(): value
        for _, value in inspect.getmembers(module, inspect.isclass)
        if issubclass(value, factory.django.DjangoModelFactory) and value._meta.model is not None
        and value.__module__ == module.__name__
    }


OUR_MODELS = [model for app_config in _our_apps() for model in app_config.get_models()]
FACTORIES = {model: cls for app_config in _our_apps() for model, cls in _factories_of(app_config).items()}


def test_our_apps_and_models_are_found():
    assert {c.label for c in _our_apps()} >= {"core", "inbox", "campaigns", "delivery"}
    assert len(OUR_MODELS) >= 10, OUR_MODELS


def test_every_model_of_ours_has_a_factory_in_its_apps_factories_module():
    missing = [model._meta.label for model in OUR_MODELS if model not in FACTORIES]
    misplaced = [f"{FACTORIES[model].__module__}.{FACTORIES[model].__name__} ({model._meta.label})"
                 for model in OUR_MODELS if model in FACTORIES
                 and FACTORIES[model].__module__ != f"{model._meta.app_config.name}.factories"]

    assert missing == [], f"models without a factory in <app>/factories.py: {missing}"
    assert misplaced == [], f"factories outside their model's app: {misplaced}"


@pytest.mark.django_db
@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda m: m._meta.label)
def test_each_factory_builds_and_saves_valid_rows(model):
    model_factory = FACTORIES.get(model)
    if model_factory is None:
        pytest.fail(f"{model._meta.label} has no factory")

    built = model_factory.build()
    first, second = model_factory.create(), model_factory.create()  # twice: unique fields get new values

    assert isinstance(built, model) and built._state.adding
    assert model.objects.filter(pk__in=[first.pk, second.pk]).count() == 2
    for row in (first, second):
        row.refresh_from_db()
        row.full_clean()  # choices, lengths, required fields and unique constraints hold
