"""The layers stay one-way: import-linter checks the imports (.importlinter), and this checks what it
cannot see, Django's string references: model relations and migration dependencies."""

import configparser
import subprocess
import sys

import pytest
from django.apps import apps
from django.db.migrations.loader import MigrationLoader

from core.processes import BASE_DIR


def _layers() -> list[str]:
    """Top to bottom, as .importlinter lists them (one list for both checks)."""
    config = configparser.ConfigParser()
    config.read(BASE_DIR / ".importlinter")
    return config["importlinter:contract:layers"]["layers"].split()


def upward(edges: list[tuple[str, str, str]], layers: list[str]) -> list[str]:
    """The edges (what, from package, to package) that point from a layer to one above it. Packages
    outside the layers (Django's own apps) sit below all of them."""
    rank = {name: i for i, name in enumerate(layers)}
    return [what for what, source, target in edges
            if source in rank and target in rank and rank[target] < rank[source]]


def test_upward_finds_an_edge_that_points_up_and_only_that():
    layers = ["top", "middle", "bottom"]
    edges = [("ok", "top", "bottom"), ("same", "middle", "middle"), ("up", "bottom", "middle"),
             ("django", "bottom", "auth")]
    assert upward(edges, layers) == ["up"]


def test_the_import_contracts_hold():
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "--no-cache"],
                            cwd=BASE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_model_relation_points_to_a_layer_above():
    edges = [
        (f"{model._meta.label}.{field.name} -> {field.related_model._meta.label}",
         model._meta.app_label, field.related_model._meta.app_label)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if field.is_relation and field.related_model is not None and field.concrete
    ]
    assert edges, "no relations found: the check would pass vacuously"
    assert upward(edges, _layers()) == []


@pytest.mark.django_db
def test_no_migration_depends_on_a_layer_above():
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    edges = [(f"{app}.{name} depends on {dep_app}.{dep_name}", app, dep_app)
             for (app, name), node in graph.node_map.items()
             for dep_app, dep_name in (parent.key for parent in node.parents)]
    assert any(app == "delivery" for _, app, _ in edges)
    assert upward(edges, _layers()) == []


def test_the_layers_are_the_project_packages():
    assert _layers() == ["notifications_project", "delivery", "campaigns", "inbox", "core"]


def test_every_layer_logs_at_the_configured_level(settings):
    """A package missing from LOGGING's loggers falls back to the root's WARNING: its progress lines
    (a consumer's assignments, the relay's counts) would vanish without a trace."""
    assert set(_layers()) <= set(settings.LOGGING["loggers"])
