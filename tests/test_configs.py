"""Every config file in every group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from omegaconf import OmegaConf, open_dict
from PIL import Image

from morpho.cli.train import train
from morpho.config import config_dir
from morpho.data.datamodule import GalaxyDataModule
from morpho.data.simulate import SimulationSpec

CONF = Path(config_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(config_name: str, overrides: list[str], tmp_path: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> dict[str, str]:
    """One tiny file or folder per reader (read-only)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    stamps = root / "stamps"
    stamps.mkdir()
    for i in range(6):
        fits.PrimaryHDU(rng.normal(size=(40, 40)).astype(np.float32)).writeto(stamps / f"g{i}.fits")
    with h5py.File(root / "galaxy10.h5", "w") as h5:
        h5["images"] = rng.integers(0, 255, size=(6, 48, 48, 3), dtype=np.uint8)
        h5["ans"] = np.arange(6) % 3
    pngs = root / "pngs"
    pngs.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(pngs / f"{i}.png")
    catalog = root / "catalog.csv"
    catalog.write_text("id_str,file_loc\n" + "".join(f"g{i},pngs/{i}.png\n" for i in range(6)))
    return {"fits": str(stamps), "hdf5": str(root / "galaxy10.h5"), "images": str(catalog)}


def test_every_group_option_is_tested():
    assert set(_options("data")) == {
        "simulated",
        "simulated_sersic",
        "simulated_density",
        "fits",
        "hdf5",
        "images",
    }
    assert set(_options("simulation")) == {"six_class", "six_class_gri", "single_sersic"}
    tested = {"model", "trainer", "callbacks", "logger", "debug", "experiment", "taxonomy"}
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    assert groups == tested | {"data", "simulation", "paths", "hydra"}


TINY_DATA = [
    "data.prepare.n_galaxies=24",
    "data.prepare.workers=1",
    "data.image_size=32",
    "data.prepare.spec.image_size=32",
    "data.batch_size=8",
]
TINY_TRAIN = [
    *TINY_DATA,
    "model.encoder.channels=[4,8]",
    "model.encoder.embedding_dim=4",
    "model.projector.hidden_dim=16",
    "model.projector.out_dim=16",
]
# The Sérsic model on its data: 32x32 -> 4x4 maps of 16 channels = 256 features.
TINY_SERSIC = [*TINY_DATA, "model.encoder.channels=[4,8,16]", "model.head.in_dim=256"]
TINY_PIXELCNN = [*TINY_DATA, "model.net.channels=8", "model.net.n_blocks=1"]


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("model", "trainer", "callbacks", "logger", "debug", "experiment")
        for o in _options(g)
    ],
)
def test_train_group_options_instantiate(group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.data_dir={tmp_path}", *TINY_TRAIN]
    if option.startswith("sersic"):
        data = ["data=simulated_sersic"] if group == "model" else []
        overrides = [f"{group}={option}", *data, f"paths.data_dir={tmp_path}", *TINY_SERSIC]
    if option in ("pixelcnn", "density"):
        overrides = [f"{group}={option}", f"paths.data_dir={tmp_path}", *TINY_PIXELCNN]
    if group == "experiment" and option.endswith("plain"):
        overrides = [o for o in overrides if "projector" not in o]
    cfg = _compose("train", overrides, tmp_path)
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module)
    options = {"logger": False, "enable_progress_bar": False}
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        # Every other setting of a GPU config, checked on two CPU devices.
        assert cfg.trainer.precision == "bf16-mixed"
        options |= {"accelerator": "cpu", "devices": 2}
    trainer = instantiate(cfg.trainer, **options)
    assert trainer.max_epochs >= 1
    if group == "trainer" and "strategy" in cfg.trainer:
        assert trainer.world_size == 2 * cfg.trainer.get("num_nodes", 1)
        assert isinstance(trainer.strategy, DDPStrategy)
        spawns = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
        assert spawns == (cfg.trainer.strategy == "ddp_spawn")
    for node in (cfg.get("callbacks") or {}).values():
        assert instantiate(node) is not None
    for node in (cfg.get("logger") or {}).values():
        assert instantiate(node) is not None


def test_train_runs_one_batch_of_each_stage(tmp_path):
    overrides = ["debug=fdr", f"paths.data_dir={tmp_path}", "callbacks=none", *TINY_TRAIN]
    overrides += ["+trainer.accumulate_grad_batches=3"]
    cfg = _compose("train", overrides, tmp_path)
    result = train(cfg)
    assert np.isfinite(result["metrics"]["train/loss"])
    assert np.isfinite(result["metrics"]["val/loss"])
    assert result["effective_batch_size"] == 8 * 1 * 3  # batch_size × devices × accumulated


SLURM = ["hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=3", "trainer.devices=8"]


def test_the_slurm_launcher_follows_the_trainer(tmp_path):
    """hydra/launcher=slurm composes without its plugin: one SLURM task and GPU per device."""
    cfg = _compose("train", SLURM, tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 8, 8)
    assert launcher.partition is None
    assert launcher.timeout_min > 0


def test_the_slurm_launcher_settings_are_the_plugins(tmp_path):
    """Every key of hydra/launcher=slurm is one of hydra-submitit-launcher's (the ``slurm``
    extra), with a value of the right type, and the launcher instantiates."""
    plugin = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")
    cfg = _compose("train", SLURM, tmp_path)
    ours = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # A key the plugin does not know, or a value of the wrong type, raises here.
    merged = OmegaConf.to_container(OmegaConf.merge(plugin.SlurmQueueConf, ours))
    assert {key: merged[key] for key in ours} == ours
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher.params["tasks_per_node"] == 8


@pytest.mark.parametrize("option", _options("taxonomy"))
def test_taxonomy_configs_instantiate(option, tmp_path):
    cfg = _compose("cluster", [f"taxonomy={option}", "embeddings=x.parquet"], tmp_path)
    taxonomy = instantiate(cfg.taxonomy)
    assert taxonomy.get_params()["random_state"] == cfg.seed


@pytest.mark.parametrize("name", ["embed", "assign", "fit", "score", "sample", "complete"])
def test_command_configs_compose(name, tmp_path):
    cfg = _compose(name, ["+ckpt_path=x.ckpt", "+taxonomy_path=t", "+embeddings=e"], tmp_path)
    assert cfg.task_name == name
    if "data" in cfg:
        assert isinstance(instantiate(cfg.data), GalaxyDataModule)


@pytest.mark.parametrize("option", _options("simulation"))
def test_simulation_configs_instantiate(option, tmp_path):
    cfg = _compose("simulate", [f"simulation={option}"], tmp_path)
    spec = instantiate(cfg.simulation, _convert_="all")
    assert isinstance(spec, SimulationSpec)
    assert spec.mode == ("single_sersic" if option == "single_sersic" else "six_class")
    assert len(spec.bands) == (3 if option == "six_class_gri" else 1)
    assert cfg.output.endswith(f"{spec.mode}_2000_seed0.h5")


@pytest.mark.parametrize("option", _options("data"))
def test_data_configs_instantiate_and_load_a_batch(option, tmp_path, tiny_inputs):
    overrides = [f"data={option}", f"paths.data_dir={tmp_path}", "data.num_workers=0"]
    if option.startswith("simulated"):
        overrides += [
            "data.prepare.n_galaxies=12",
            "data.prepare.workers=1",
            "data.image_size=32",
            "data.prepare.spec.image_size=32",
            "data.batch_size=4",
        ]
    else:
        key = "catalog" if option == "images" else "path"
        overrides += [f"data.source.{key}={tiny_inputs[option]}", "data.image_size=32"]
    cfg = _compose("inspect", overrides, tmp_path)
    assert cfg.data.join_table is None
    assert cfg.data.drop_unlabelled is False
    dm = instantiate(cfg.data)
    assert isinstance(dm, GalaxyDataModule)
    assert not list(tmp_path.glob("*.h5")), "nothing may be read or written before prepare_data"
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[-2:] == (32, 32)
    assert batch["image"].dtype.is_floating_point


def test_a_user_config_folder_extends_the_search_path(tmp_path):
    mine = tmp_path / "my_conf" / "simulation"
    mine.mkdir(parents=True)
    (mine / "ellipticals.yaml").write_text(
        "defaults:\n  - six_class\n  - _self_\nimage_size: 48\nbands: [g, r]\n"
    )
    cfg = _compose(
        "simulate",
        [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "simulation=ellipticals"],
        tmp_path,
    )
    spec = instantiate(cfg.simulation, _convert_="all")
    assert spec.image_size == 48
    assert spec.bands == ("g", "r")
