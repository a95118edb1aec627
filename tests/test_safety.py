"""Checkpoints, proposal files and configs are loaded without running code from them."""
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from fpn_variants.config import load_config
from fpn_variants.safety import safe_pickle_in_detectron2, safe_pickle_load

from conftest import REPO, small_cfg


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_malicious_pkl_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pkl"
    write_pickle(bad, {"model": {"x": Exploit(marker)}, "__author__": "evil"})
    model = build_model(small_cfg())
    with safe_pickle_in_detectron2(), pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|os)\.system"):
        DetectionCheckpointer(model).load(str(bad))
    assert not marker.exists()


def test_detectron2_format_pkl_still_loads(tmp_path):
    cfg = small_cfg()
    model = build_model(cfg)
    sd = {k: v.numpy().copy() + 1 for k, v in model.state_dict().items() if k.startswith("backbone.fpn_lateral")}
    good = tmp_path / "zoo.pkl"
    write_pickle(good, {"model": sd, "__author__": "test"})
    with safe_pickle_in_detectron2():
        DetectionCheckpointer(model).load(str(good))
    for k, v in sd.items():
        assert np.array_equal(model.state_dict()[k].numpy(), v), k


def test_malicious_pth_checkpoint_is_refused_by_torch_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pth"
    torch.save({"model": {}, "x": Exploit(marker)}, bad)
    model = build_model(small_cfg())
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        DetectionCheckpointer(model).load(str(bad))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_of_every_pickle_protocol_load(tmp_path, protocol):
    data = {"ids": [1, "a"], "boxes": [np.arange(8, dtype=np.float32).reshape(2, 4)], "bbox_mode": 0,
            "objectness_logits": [np.array([0.5, -1.0], dtype=np.float32)], "s": np.float32(2.5)}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with open(path, "rb") as f:
        got = safe_pickle_load(f)
    assert got["ids"] == [1, "a"] and np.array_equal(got["boxes"][0], data["boxes"][0]) and got["s"] == np.float32(2.5)


def test_malicious_proposal_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "proposals.pkl"
    write_pickle(bad, {"ids": [Exploit(marker)], "boxes": [], "objectness_logits": []})
    with open(bad, "rb") as f, pytest.raises(pickle.UnpicklingError, match="proposals.pkl: refusing"):
        safe_pickle_load(f)
    from detectron2.data.build import load_proposals_into_dataset

    with safe_pickle_in_detectron2(), pytest.raises(pickle.UnpicklingError):
        load_proposals_into_dataset([{"image_id": 1}], str(bad))
    assert not marker.exists()
    import detectron2.data.build as b

    assert b.pickle is pickle  # restored after the context


def test_yaml_config_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{REPO}/configs/NEON/rpn_c_fpn.yaml"\nSEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ValueError, match="YAML tags that construct Python objects are refused"):
        load_config(str(bad))
    assert not marker.exists()
