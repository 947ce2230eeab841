"""log_param(s) and set_tag(s): values, immutability, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load

import prov4torch


def params_of(run) -> dict:
    return load(run.prov_path)["entity"][f"p4t:run/{run.run_id}/rank/0/params"]


def test_parameter_values_keep_their_types():
    with prov4torch.start_run() as run:
        prov4torch.log_params({"lr": 0.1, "epochs": np.int64(3), "wd": torch.tensor(0.5), "sched": None,
                               "layers": [64, 32], "name": "cnn", "bn": True})
    p = params_of(run)
    assert p["param:lr"] == {"$": "0.1", "type": "xsd:double"}
    assert p["param:epochs"] == {"$": "3", "type": "xsd:int"}
    assert p["param:wd"] == {"$": "0.5", "type": "xsd:double"}
    assert p["param:layers"] == "[64, 32]" and p["param:name"] == "cnn" and p["param:bn"] is True
    assert p["param:sched"] == "None"  # recorded explicitly, as MLflow does


def test_same_value_twice_is_fine_a_different_value_is_an_error():
    with prov4torch.start_run() as run:
        prov4torch.log_param("lr", 0.1)
        prov4torch.log_param("lr", 0.1)
        prov4torch.log_param("nan", float("nan"))
        prov4torch.log_param("nan", float("nan"))
        with pytest.raises(prov4torch.InvalidValueError, match=r"parameter 'lr' was already logged as 0.1"):
            prov4torch.log_param("lr", 0.2)
    assert params_of(run)["param:lr"]["$"] == "0.1"


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "invalid parameter name ''"), (None, "parameter name must be a string"),
     ("a b", "invalid parameter name"), ("x" * 300, "invalid parameter name")],
)
def test_bad_parameter_names(key, message):
    with prov4torch.start_run(), pytest.raises(prov4torch.InvalidValueError, match=message):
        prov4torch.log_param(key, 1)


def test_log_params_and_set_tags_need_mappings():
    with prov4torch.start_run():
        with pytest.raises(prov4torch.InvalidValueError, match="mapping"):
            prov4torch.log_params(["lr", 0.1])
        with pytest.raises(prov4torch.InvalidValueError, match="mapping"):
            prov4torch.set_tags("team=vision")


def test_tags_may_be_overwritten_last_wins():
    with prov4torch.start_run(tags={"stage": "dev"}) as run:
        prov4torch.set_tag("stage", "prod")
        prov4torch.set_tags({"owner": "ana"})
    act = load(run.prov_path)["activity"][f"p4t:run/{run.run_id}/rank/0"]
    assert act["tag:stage"] == "prod" and act["tag:owner"] == "ana"
