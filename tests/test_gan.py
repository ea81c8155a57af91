"""Liu et al. (MICCAI 2020): binary codec C, critic D, designs D1–D4 in 2D and 3D (tiny, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from data_modules.hvsmr import HVSMRDataModule, find_hvsmr_pairs, load_volume
from data_modules.isic import ISICDataModule, find_isic_pairs
from data_modules.synthetic import hvsmr as synth_hvsmr
from data_modules.synthetic import isic as synth_isic
from mvmic.codecs import BitstreamError, build_codec
from mvmic.codecs.base import pinned_threads
from mvmic.codecs.binary import BinaryCodec, binarize
from mvmic.losses import multiscale_l1
from mvmic.modules.gan_seg import GanSegmentation
from mvmic.tasks.critic import Critic

CLASSES_3D = ["background", "myocardium", "blood_pool"]


@pytest.fixture(scope="module")
def isic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("isic")
    synth_isic.generate(root, num=8, size=48, seed=0)
    return root


@pytest.fixture(scope="module")
def hvsmr_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hvsmr")
    synth_hvsmr.generate(root, num=5, size=20, seed=0)
    return root


def tiny_module(design: str, dims: int, **kw) -> GanSegmentation:
    if dims == 2:
        args = dict(
            in_channels=3,
            num_classes=2,
            code_channels=8,
            codec_width=8,
            encoder="resnet18",
            seg_args={"encoder_depth": 3, "decoder_channels": (32, 16, 8)},
            critic_channels=[8, 16],
        )
    else:
        args = dict(
            dims=3,
            in_channels=1,
            num_classes=3,
            class_names=CLASSES_3D,
            arch="UNet",
            code_channels=4,
            codec_width=8,
            roi_size=[16, 16, 16],
            critic_channels=[4, 8],
            seg_args={"channels": (8, 16), "strides": (2,), "num_res_units": 0},
        )
    args.update(kw)
    return GanSegmentation(design=design, **args)


def tiny_data(dims: int, isic_root: Path, hvsmr_root: Path):
    if dims == 2:
        return ISICDataModule(root=str(isic_root), image_size=32, batch_size=2)
    return HVSMRDataModule(
        root=str(hvsmr_root), crop_size=(16, 16, 16), crops_per_volume=1, batch_size=1
    )


def trainer(tmp_path: Path, **kw) -> L.Trainer:
    kw.setdefault("logger", False)
    return L.Trainer(
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kw,
    )


# -- C: binarization, bit model, real bits ------------------------------------------------
def test_stochastic_binarization_is_unbiased_with_straight_through_gradient():
    torch.manual_seed(0)
    z = torch.linspace(-0.9, 0.9, 7).repeat(20000, 1).requires_grad_()
    b = binarize(z, stochastic=True)
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    # E[b] = z: the std of each column mean is ≤ 1/sqrt(20000) ≈ 0.007.
    assert torch.allclose(b.mean(0), z[0], atol=0.03)
    b.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_eval_binarization_is_deterministic_and_training_is_not():
    torch.manual_seed(0)
    codec = BinaryCodec(in_channels=3, code_channels=8, N=8)
    x = torch.rand(2, 3, 32, 32)
    codec.train()
    assert not torch.equal(codec(x).likelihoods["b"], codec(x).likelihoods["b"])
    codec.eval()
    a, b = codec(x), codec(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.likelihoods["b"], b.likelihoods["b"])
    assert torch.equal(binarize(torch.tensor([-0.2, 0.0, 0.3]), False), torch.tensor([-1.0, 1, 1]))


def test_encoder_parameter_count_is_light():
    assert 1_000_000 <= BinaryCodec(in_channels=3).encoder_parameters() <= 2_000_000
    assert 1_000_000 <= BinaryCodec(in_channels=1, dims=3).encoder_parameters() <= 2_000_000


@pytest.mark.parametrize("dims", [2, 3])
def test_real_bits_round_trip_gives_the_eval_code(dims):
    torch.manual_seed(0)
    shape = (1, 3, 37, 45) if dims == 2 else (1, 1, 11, 13, 17)
    codec = BinaryCodec(in_channels=shape[1], code_channels=8, N=8, dims=dims).eval()
    x = torch.rand(shape)
    bitstream = codec.compress(x[0])
    data = bitstream.to_bytes()
    decoded = codec.decompress(data)
    # Coding runs on CODING_THREADS threads; the reference pass must too, since oneDNN's
    # reductions depend on the thread count in the last bits.
    with torch.no_grad(), pinned_threads():
        expected = codec(x).x_hat
    assert decoded.shape == expected.shape == (1, 1, *shape[2:])
    assert torch.equal(decoded, expected)
    # The payload matches the bit model's estimate: rANS adds its 4-byte final state and
    # rounds up to whole 32-bit words (≤ 64 bits); 16-bit CDFs cost a fraction of a bit.
    with torch.no_grad():
        est_bits = float(-torch.log2(codec(x).likelihoods["b"]).sum())
    assert est_bits - 8 <= 8 * bitstream.payload_bytes <= est_bits + 72
    if dims == 3:
        assert bitstream.depth == 11
    # Another checkpoint refuses the file instead of decoding garbage.
    other = BinaryCodec(in_channels=shape[1], code_channels=8, N=8, dims=dims).eval()
    with pytest.raises(BitstreamError, match="different checkpoint"):
        other.decompress(data)


def test_bit_model_fits_a_skewed_code_and_build_codec_finds_it():
    codec = build_codec("liu2020-binary", in_channels=1, code_channels=4, N=8)
    assert isinstance(codec, BinaryCodec)
    assert set(codec.decoder_state_keys()) == {
        k for k in codec.state_dict() if k.startswith("g.")
    } | {"bit_logits"}
    with torch.no_grad():
        codec.bit_logits.fill_(-4.0)  # p(b=1) ≈ 0.018
    codec.eval()
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        codec.encoder[-1].bias.fill_(-50.0)  # every bit 0: the cheap symbol
    bits = codec.compress(x).payload_bytes * 8
    assert bits < 0.1 * codec.code(x).numel()


# -- D: the multi-scale critic --------------------------------------------------------------
def test_critic_multiscale_features_2d_and_3d():
    critic = Critic(num_classes=2, dims=2, channels=(8, 16, 32))
    label = torch.rand(3, 2, 32, 32)
    assert critic(label).shape == (3, 8 * 16 * 16 + 16 * 8 * 8 + 32 * 4 * 4)
    assert [f.shape[1:] for f in critic.features(label)] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    critic3 = Critic(num_classes=3, dims=3, channels=(4, 8))
    assert critic3(torch.rand(2, 3, 16, 16, 16)).shape == (2, 4 * 8**3 + 8 * 4**3)
    masked = Critic(num_classes=2, image_channels=3, critic_input="masked_image", channels=(8,))
    assert masked.layers[0][0].in_channels == 6
    image = torch.rand(3, 3, 32, 32)
    assert masked(label, image).shape == (3, 8 * 16 * 16)
    assert multiscale_l1(critic, label, label).item() == 0.0
    assert multiscale_l1(critic, label, 1 - label).item() > 0.0
    with pytest.raises(ValueError, match="critic_input"):
        Critic(num_classes=2, critic_input="image")


# -- data ------------------------------------------------------------------------------------
def test_isic_layout_splits_and_errors(isic_root, tmp_path):
    pairs = find_isic_pairs(isic_root, "train")
    assert len(pairs) == 8 and all("_superpixels" not in p.name for p, _ in pairs)
    assert len(find_isic_pairs(isic_root, "test")) == 2  # Test_v2 folder
    dm = ISICDataModule(root=str(isic_root), image_size=32, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) <= {0, 1}
    with pytest.raises(FileNotFoundError, match="mvmic synth isic2017"):
        find_isic_pairs(tmp_path / "nowhere", "train")
    (isic_root / "ISIC-2017_Validation_Data" / "ISIC_9999999.jpg").write_bytes(b"")
    try:
        with pytest.raises(ValueError, match="ISIC_9999999"):
            find_isic_pairs(isic_root, "val")
    finally:
        (isic_root / "ISIC-2017_Validation_Data" / "ISIC_9999999.jpg").unlink()


def test_hvsmr_layout_axis_order_crops_and_errors(hvsmr_root, tmp_path):
    pairs = find_hvsmr_pairs(hvsmr_root)
    assert list(pairs) == [f"pat{i}" for i in range(5)]
    image, label = load_volume(*pairs["pat0"])
    assert image.shape == (1, 20, 20, 20) and 0 <= image.min() and image.max() <= 1
    assert set(np.unique(label)) == {0, 1, 2}
    # (x, y, z) on disk -> (z, y, x) in memory.
    import nibabel as nib

    raw = np.asarray(nib.load(str(pairs["pat0"][1])).dataobj)
    assert np.array_equal(label, raw.transpose(2, 1, 0))
    dm = HVSMRDataModule(
        root=str(hvsmr_root), crop_size=(8, 12, 16), batch_size=2, crops_per_volume=2
    )
    dm.trainer = None
    dm.setup("fit")
    assert sorted(sum(dm.split.values(), [])) == sorted(pairs)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 8, 12, 16) and batch["mask"].shape == (2, 8, 12, 16)
    assert next(iter(dm.val_dataloader()))["image"].shape == (1, 1, 20, 20, 20)
    with pytest.raises(FileNotFoundError, match="mvmic synth hvsmr"):
        find_hvsmr_pairs(tmp_path / "nowhere")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "training_axial_crop_pat7.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="pat7.nii.gz"):
        find_hvsmr_pairs(lone)


# -- the module: every design in 2D and 3D ----------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("design", ["D1", "D2", "D3", "D4"])
def test_design_fast_dev_run_fit_and_test(design, dims, isic_root, hvsmr_root, tmp_path):
    L.seed_everything(0)
    model = tiny_module(design, dims, results_dir=str(tmp_path / "results"))
    assert (model.codec is None) == (design == "D1")
    assert (model.critic is None) == (design == "D2")
    n_opt = 1 if design == "D2" else 2
    opts = model.configure_optimizers()
    assert (len(opts) if isinstance(opts, list) else 1) == n_opt
    dm = tiny_data(dims, isic_root, hvsmr_root)
    t = trainer(tmp_path, fast_dev_run=1)
    t.fit(model, dm)
    t.test(model, dm)
    point = model.test_point
    assert point["design"] == design
    names = ["class1"] if dims == 2 else CLASSES_3D[1:]
    for key in ["bpp", "bpp_est", "dice", "iou"] + [
        f"{m}_{c}" for m in ("dice", "iou") for c in names
    ]:
        assert key in point and np.isfinite(point[key]), key
    raw = 8.0 * (3 if dims == 2 else 1)
    assert (point["bpp"] == raw) == (design == "D1")
    record = json.loads(
        (tmp_path / "results" / dm.dataset_name / f"liu2020-{design.lower()}.json").read_text()
    )
    assert record["results"]["design"] == [design]
    assert (tmp_path / "images" / "test_epoch000.png").is_file() or any(
        (tmp_path / "images").glob("test_*.png")
    )


def test_checkpoint_resumes_and_reloads(isic_root, tmp_path):
    from mvmic.modules import load_module

    L.seed_everything(0)
    dm = tiny_data(2, isic_root, None)
    # Manual optimization: global_step counts optimizer steps, two per batch (C+S, then D).
    t = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    model = tiny_module("D4", 2)
    t.fit(model, dm)
    assert t.global_step == 2
    ckpt = tmp_path / "d4.ckpt"
    t.save_checkpoint(ckpt)
    t2 = trainer(tmp_path, max_steps=4, limit_val_batches=0)
    t2.fit(tiny_module("D4", 2), dm, ckpt_path=str(ckpt))
    assert t2.global_step == 4
    # Both Adam states were restored and advanced by one more batch.
    for opt in t2.optimizers:
        steps = {int(s["step"]) for s in opt.state.values()}
        assert steps == {2}, steps
    loaded = load_module(ckpt)
    assert isinstance(loaded, GanSegmentation) and not loaded.training
    assert torch.equal(loaded.codec.bit_logits, model.codec.bit_logits)


@pytest.mark.slow  # two 6-step fits and tests: ~9 s
def test_rate_loss_lowers_measured_bpp(isic_root, tmp_path):
    """The real effect of D4: after the same steps from the same seed, fewer real bits."""
    bpp = {}
    for design in ("D3", "D4"):
        L.seed_everything(0)
        model = tiny_module(
            design, 2, lmbda_cr=10.0, lr=1e-3, results_dir=str(tmp_path / "results")
        )
        dm = ISICDataModule(root=str(isic_root), image_size=64, batch_size=2, augment=False)
        t = trainer(tmp_path / design, max_steps=6, limit_val_batches=0)
        t.fit(model, dm)
        t.test(model, dm)
        bpp[design] = model.test_point["bpp"]
    assert bpp["D4"] < 0.8 * bpp["D3"], bpp


def test_lmbda_dis_weights_the_critic_term_of_the_segmentor_loss(isic_root, tmp_path):
    """C+S's loss is loss_seg + lmbda_dis * loss_dis (D1: no codec, no rate); D's is not."""
    logged = {}
    for w in (1.0, 0.25):
        L.seed_everything(0)
        model = tiny_module("D1", 2, lmbda_dis=w)
        dm = ISICDataModule(root=str(isic_root), image_size=32, batch_size=2, augment=False)
        t = trainer(tmp_path / str(w), max_steps=1, limit_val_batches=0)
        t.fit(model, dm)
        m = {k: float(v) for k, v in t.callback_metrics.items()}
        assert m["train_loss"] == pytest.approx(m["train_loss_seg"] + w * m["train_loss_dis"])
        logged[w] = m
    # the same first batch and weights: only the C+S loss changes, D's loss does not
    assert logged[1.0]["train_loss_d"] == pytest.approx(logged[0.25]["train_loss_d"])
    assert logged[1.0]["train_loss_dis"] > 0
    with pytest.raises(Exception, match="lmbda_dis"):
        tiny_module("D1", 2, lmbda_dis=-1.0)


def test_hyperprior_codec_is_pluggable_in_2d(isic_root, tmp_path):
    L.seed_everything(0)
    model = tiny_module(
        "D4",
        2,
        codec="bmshj2018-hyperprior",
        codec_args={"N": 8, "M": 12},
        results_dir=str(tmp_path / "results"),
    )
    assert model.task.net.net.encoder.conv1.in_channels == 3  # s reads the decoded image
    dm = tiny_data(2, isic_root, None)
    t = trainer(tmp_path, fast_dev_run=1)
    t.fit(model, dm)
    t.test(model, dm)
    assert model.method_name == "liu2020-d4-bmshj2018-hyperprior"
    assert 0 < model.test_point["bpp"] < 24
    with pytest.raises(ValueError, match="2D only"):
        tiny_module("D4", 3, codec="mbt2018-mean")


def test_init_from_starts_c_and_s_from_another_design_and_d_fresh(isic_root, tmp_path):
    L.seed_everything(0)
    d2 = tiny_module("D2", 2)
    ckpt = tmp_path / "d2.ckpt"
    torch.save({"state_dict": d2.state_dict()}, ckpt)
    L.seed_everything(1)
    d4 = tiny_module("D4", 2, init_from=str(ckpt))
    critic_before = {k: v.clone() for k, v in d4.critic.state_dict().items()}
    assert not torch.equal(d4.codec.encoder[0].weight, d2.codec.encoder[0].weight)  # seeds
    d4.setup("fit")
    for name in ("codec", "task"):
        ours, theirs = getattr(d4, name).state_dict(), getattr(d2, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    assert all(torch.equal(v, d4.critic.state_dict()[k]) for k, v in critic_before.items())
    # D1's segmentor reads the image (3 channels), not g's one feature map: named, not loaded
    d1 = tmp_path / "d1.ckpt"
    torch.save({"state_dict": tiny_module("D1", 2).state_dict()}, d1)
    with pytest.raises(ValueError, match=r"init_from .*d1\.ckpt.*design D4"):
        tiny_module("D4", 2, init_from=str(d1)).setup("fit")


@pytest.mark.parametrize("dims", [2, 3])
def test_test_record_carries_times_bytes_and_absolute_data_root(
    dims, isic_root, hvsmr_root, tmp_path, monkeypatch
):
    # Liu et al.'s Table 2 rows in `mvmic latency` need measured times and the file bytes.
    L.seed_everything(0)
    model = tiny_module("D2", dims, results_dir=str(tmp_path / "results"))
    dm = tiny_data(dims, isic_root, hvsmr_root)
    monkeypatch.chdir(dm.hparams["root"])
    dm.hparams["root"] = "."  # a relative root, as a user in the data folder would type it
    t = trainer(tmp_path, fast_dev_run=1)
    t.test(model, dm)
    point = model.test_point
    for key in ("enc_ms", "dec_ms", "task_ms", "bytes", "file_bytes", "pixels"):
        assert point[key] > 0, key
    assert point["file_bytes"] > point["bytes"]  # the container's header and checksum
    assert point["bpp"] == pytest.approx(8 * point["bytes"] / point["pixels"])
    record = json.loads((tmp_path / "results" / dm.dataset_name / "liu2020-d2.json").read_text())
    assert record["data_root"] == str(Path.cwd().resolve())


# -- the formulation through the contracts (issue 15) -------------------------------------
def test_no_isinstance_on_a_codec_class_outside_codecs():
    # A difference between codecs is a property on the contract, never a class test (asking
    # whether an object is a Codec at all is the contract itself, and stays allowed).
    import re

    import mvmic
    from mvmic.codecs.base import Codec

    def subclasses(cls: type) -> set[str]:
        return {c.__name__ for c in cls.__subclasses__()} | {
            n for c in cls.__subclasses__() for n in subclasses(c)
        }

    root = Path(mvmic.__file__).parent
    codec_classes = subclasses(Codec) | {"BinaryCodec", "HyperpriorCodec", "StandardCodec"}
    pattern = re.compile(r"isinstance\([^)]*?,\s*\(?([A-Za-z_., ]+)\)?\)")
    found = []
    for path in root.rglob("*.py"):
        if "codecs" in path.relative_to(root).parts:
            continue
        for m in pattern.finditer(path.read_text()):
            names = {n.strip().rsplit(".", 1)[-1] for n in m.group(1).split(",")}
            if names & codec_classes:
                found.append(f"{path.relative_to(root)}: {m.group(0)}")
    assert not found, found


def test_codec_contract_says_what_the_gan_branches_on():
    binary = build_codec("liu2020-binary", in_channels=3, code_channels=4, N=8)
    hyper = build_codec("bmshj2018-hyperprior", N=8, M=12)
    assert not binary.decodes_image and binary.rate_fits_entropy_model
    assert not binary.stores_entropy_tables
    assert binary.entropy_parameters() == [binary.bit_logits]
    assert hyper.decodes_image and not hyper.rate_fits_entropy_model
    assert hyper.stores_entropy_tables
    names = {id(p) for p in hyper.entropy_parameters()}
    assert names and names == {id(p) for p in hyper.aux_parameters()}


def test_gan_aux_lr_is_exposed_for_a_hyperprior_codec():
    model = tiny_module(
        "D4", 2, codec="bmshj2018-hyperprior", codec_args={"N": 8, "M": 12}, aux_lr=5e-3
    )
    opt_cs, _ = model.configure_optimizers()
    groups = {g["name"]: g for g in opt_cs.param_groups}
    assert groups["entropy"]["lr"] == 5e-3
    assert {id(p) for p in groups["entropy"]["params"]} == {
        id(p) for p in model.codec.aux_parameters()
    }
    binary = tiny_module("D4", 2, bit_lr=3e-2, aux_lr=5e-3).configure_optimizers()[0]
    assert {g["name"]: g["lr"] for g in binary.param_groups}["entropy"] == 3e-2
    with pytest.raises(Exception, match="aux_lr"):
        tiny_module("D4", 2, aux_lr=0.0)


def test_gan_segmentor_implements_the_task_loss():
    from mvmic.tasks.gan import GanSegmentor

    model = tiny_module("D2", 2)
    assert isinstance(model.task, GanSegmentor)
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)  # g's one feature channel
    mask = torch.randint(0, 2, (2, 32, 32))
    loss, terms = model.task.loss(x, {"mask": mask})
    target = torch.nn.functional.one_hot(mask, 2).movedim(-1, 1).float()
    expected = torch.nn.functional.mse_loss(model.task(x).softmax(1), target)
    assert torch.allclose(loss, expected) and torch.allclose(terms["loss_seg"], expected)
    loss.backward()
    assert any(p.grad is not None for p in model.task.parameters())


def test_codec_modules_share_one_real_bits_test_loop():
    from mvmic.modules import MVMICNet
    from mvmic.modules.codec_module import CodecModule

    for cls in (MVMICNet, GanSegmentation):
        assert issubclass(cls, CodecModule)
        for hook in ("on_test_epoch_start", "test_step", "on_test_epoch_end", "set_panel"):
            assert getattr(cls, hook) is getattr(CodecModule, hook), (cls.__name__, hook)
