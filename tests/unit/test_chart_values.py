"""The chart's values.yaml and the model its schema is generated from say the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mailward.api.chart_values import ChartValues

VALUES = Path(__file__).resolve().parents[2] / "charts" / "mailward" / "values.yaml"


def test_values_yaml_holds_the_models_defaults() -> None:
    written = yaml.safe_load(VALUES.read_text())
    assert ChartValues.model_validate(written) == ChartValues()
    # Every key of the model is written out, so values.yaml documents all of them.
    assert set(written) == {f.alias or name for name, f in ChartValues.model_fields.items()}


def test_a_misspelt_key_names_its_path() -> None:
    with pytest.raises(ValidationError) as raised:
        ChartValues.model_validate({"reconcile": {"resyncSecond": 30}})
    assert raised.value.errors()[0]["loc"] == ("reconcile", "resyncSecond")
