import gzip
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from entroprune.data import load_dataset, read_idx
from entroprune.errors import DataError
from tests.conftest import write_idx


def test_idx_roundtrip_gz_and_raw(idx_dir):
    assert read_idx(idx_dir / "train-images-idx3-ubyte.gz").shape == (60, 12, 12)
    assert read_idx(idx_dir / "t10k-labels-idx1-ubyte").shape == (15,)


def test_mnist_loader_splits_are_deterministic_and_disjoint(idx_dir):
    a = load_dataset("mnist", idx_dir, seed=3, val_size=6, calib_size=6)
    b = load_dataset("mnist", idx_dir, seed=3, val_size=6, calib_size=6)
    c = load_dataset("mnist", idx_dir, seed=4, val_size=6, calib_size=6)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)
    assert (len(a.train), len(a.val), len(a.calib), len(a.test)) == (48, 6, 6, 15)
    assert a.num_classes == 3 and a.in_channels == 1 and a.image_size == (12, 12)
    rows = {tuple(r.flatten().tolist()) for r in a.train.x}
    assert not rows & {tuple(r.flatten().tolist()) for r in a.val.x}


def test_env_var_locates_idx(idx_dir, monkeypatch):
    monkeypatch.setenv("ENTROPRUNE_DATA", str(idx_dir))
    assert len(load_dataset("fashion-mnist", None, val_size=5, calib_size=5).test) == 15


def test_a_named_folder_is_searched_alone_and_a_recorded_one_only_where_it_exists(idx_dir, monkeypatch, tmp_path):
    """The data also lies in a default place: a folder the user names that lacks it is an error naming that
    folder (not a quiet load of the other copy); a checkpoint's recorded folder that does not exist here (the
    checkpoint moved machines) falls through to the default places; the main job does not swap in digits."""
    from entroprune.api import load_data_for_spec
    from entroprune.checkpoint import ModelSpec
    from entroprune.pipeline import resolve_dataset

    monkeypatch.setenv("ENTROPRUNE_DATA", str(idx_dir))
    assert len(load_dataset("mnist", None, val_size=5, calib_size=5).test) == 15
    with pytest.raises(DataError, match=f"not found in {tmp_path / 'nope'}"):
        load_dataset("mnist", tmp_path / "nope")
    spec = ModelSpec("vgg", 3, 1, 1.0, "mnist", [0.5], [0.5], [1, 12, 12], data_dir=str(tmp_path / "nope"))
    assert len(load_data_for_spec(spec, val_size=5, calib_size=5).test) == 15
    with pytest.raises(DataError, match="not found in"):
        load_data_for_spec(spec, data_dir=tmp_path / "nope")
    assert resolve_dataset("fashion-mnist", str(tmp_path / "nope"), say=lambda m: None) == "fashion-mnist"


def test_truncated_idx_is_clear_error(idx_dir):
    raw = gzip.decompress((idx_dir / "train-images-idx3-ubyte.gz").read_bytes())
    (idx_dir / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", idx_dir)


def test_corrupt_gzip_is_clear_error(idx_dir):
    (idx_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("mnist", idx_dir)


def test_bad_idx_header(idx_dir):
    (idx_dir / "train-labels-idx1-ubyte.gz").unlink()
    (idx_dir / "train-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match="header"):
        load_dataset("mnist", idx_dir)


def test_count_mismatch(idx_dir):
    write_idx(idx_dir / "train-labels-idx1-ubyte", np.zeros(59, np.uint8))
    with pytest.raises(DataError, match="60 images but .* 59 labels"):
        load_dataset("mnist", idx_dir)


def test_missing_dir():
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", "/nonexistent/folder")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("nosuch")


def test_cifar_pickle(cifar_dir):
    d = load_dataset("cifar10", cifar_dir, val_size=4, calib_size=4)
    assert d.in_channels == 3 and d.image_size == (32, 32) and len(d.test) == 10
    assert len(d.train) == 32 and d.flip


def test_cifar_from_a_named_folder_only(cifar_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPRUNE_DATA", str(cifar_dir))
    assert len(load_dataset("cifar10", None, val_size=4, calib_size=4).test) == 10
    with pytest.raises(DataError, match=f"not found in {tmp_path / 'nope'}"):
        load_dataset("cifar10", tmp_path / "nope")


def test_cifar_corrupt_and_malicious(cifar_dir, tmp_path):
    folder = cifar_dir / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", cifar_dir)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [1]}))
    with pytest.raises(DataError):
        load_dataset("cifar10", cifar_dir)
    assert not marker.exists()


def test_imagefolder(image_dir):
    d = load_dataset("imagefolder", image_dir, val_size=2, calib_size=2)
    assert d.num_classes == 2 and d.in_channels == 3 and d.image_size == (10, 10) and d.classes == ["cat", "dog"]
    assert len(d.train) + len(d.val) + len(d.calib) + len(d.test) == 16


def test_an_image_folders_classes_take_their_nested_folders_but_not_hidden_ones(image_dir, tmp_path):
    """As torchvision's ImageFolder reads them: cat/2019/a.png is a cat (it was "no images found" when a class
    held only sub-folders, and its nested images were dropped otherwise); .ipynb_checkpoints copies are not."""
    import shutil

    root = tmp_path / "nested"
    for c in ("cat", "dog"):
        for i, f in enumerate(sorted((image_dir / c).iterdir())):
            dest = root / c / ("a" if c == "dog" else f"{i % 2}") / "deep" / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    (root / "dog" / "top.png").write_bytes((image_dir / "dog" / "0.png").read_bytes())
    hidden = root / "cat" / ".ipynb_checkpoints"
    hidden.mkdir()
    for i in range(5):
        shutil.copy(image_dir / "cat" / "0.png", hidden / f"{i}-checkpoint.png")
    d = load_dataset("imagefolder", root, val_size=2, calib_size=2)
    assert d.num_classes == 2
    n = len(d.train) + len(d.val) + len(d.calib) + len(d.test)
    assert n == 17
    ys = torch.cat([s.y for s in (d.train, d.val, d.calib, d.test)])
    assert (ys == 0).sum() == 8 and (ys == 1).sum() == 9


def test_a_val_folder_beside_train_is_the_test_split(image_dir, tmp_path):
    """ImageNet's layout (train/ and val/) and many others' (valid/): a held-out folder named so was never read, and
    the test split was carved from train/. The first of test/, val/, valid/, validation/ is the test split; one
    more of them is named as not read."""
    import shutil

    for name in ("train", "val"):
        shutil.copytree(image_dir, tmp_path / "inet" / name)
    for f in list((tmp_path / "inet" / "val" / "cat").iterdir())[:5]:
        f.unlink()
    d = load_dataset("imagefolder", tmp_path / "inet", val_size=2, calib_size=2)
    assert len(d.test) == 11 and len(d.train) + len(d.val) + len(d.calib) == 16  # val/ held out, train/ whole
    shutil.copytree(image_dir, tmp_path / "inet" / "test")
    with pytest.warns(UserWarning, match=r"inet/val not read: .*inet/test is the test split"):
        d = load_dataset("imagefolder", tmp_path / "inet", val_size=2, calib_size=2)
    assert len(d.test) == 16


def test_unlabelled_imagefolder(image_dir):
    flat = image_dir / "dog"
    d = load_dataset("imagefolder", flat, val_size=1, calib_size=2)
    assert not d.labelled and (d.calib.y == -1).all()


def test_mixed_image_folder_takes_the_models_channels_and_size(tmp_path):
    """A user's folder mixes greyscale and colour images of several sizes: they are converted to the
    model's channels and resized to its input, not refused."""
    from PIL import Image

    rng = np.random.default_rng(4)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(6):
        size = (12 + 4 * i, 10 + 2 * i)
        arr = rng.integers(0, 255, (size[1], size[0], 3) if i % 2 else (size[1], size[0]), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
    grey = load_dataset("imagefolder", folder, in_channels=1, image_size=16, val_size=1, calib_size=2)
    assert grey.in_channels == 1 and grey.image_size == (16, 16) and not grey.labelled
    colour = load_dataset("imagefolder", folder, in_channels=3, image_size=20, val_size=1, calib_size=2)
    assert colour.in_channels == 3 and colour.image_size == (20, 20)
    # the colour image read as greyscale is PIL's luminance of the same pixels
    with Image.open(folder / "1.png") as img:
        expected = np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255
    all_x = np.concatenate([grey.train.x.numpy(), grey.val.x.numpy(), grey.calib.x.numpy(), grey.test.x.numpy()])
    assert any(np.allclose(x[0], expected, atol=1e-6) for x in all_x)



def test_an_image_folders_test_split_takes_the_train_splits_channels_and_size(image_dir, tmp_path):
    """train/ in colour, test/ in greyscale of another size: the test images are converted and resized to what
    the train split (and so the model) takes, not refused as another shape."""
    from PIL import Image

    root = tmp_path / "split"
    root.mkdir()
    image_dir.rename(root / "train")
    rng = np.random.default_rng(5)
    for c in ("cat", "dog"):
        (root / "test" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (14, 14), dtype=np.uint8)).save(root / "test" / c / f"{i}.png")
    d = load_dataset("imagefolder", root, val_size=2, calib_size=2)
    assert (d.in_channels, d.image_size, tuple(d.test.x.shape)) == (3, (10, 10), (6, 3, 10, 10))


def _rect_folder(root, sizes, rng):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_rectangular_images_keep_their_size_in_every_split_and_checkpoint(tmp_path, recwarn):
    """12x20 images in train/ and test/ were refused ("test images are (3, 20, 20)"): the test split was resized to a
    square of the training width. A rectangular model's checkpoint sizes another folder's images to its input, as
    a square model's does (they were refused as another size)."""
    from entroprune.api import load_data_for_spec
    from entroprune.checkpoint import ModelSpec

    rng = np.random.default_rng(6)
    for split in ("train", "test"):
        _rect_folder(tmp_path / "rect" / split, [(12, 20)] * 4, rng)
    d = load_dataset("imagefolder", tmp_path / "rect", val_size=1, calib_size=1)
    assert d.image_size == (12, 20) and tuple(d.test.x.shape[1:]) == (3, 12, 20)
    assert not [w for w in recwarn if "resized" in str(w.message)]
    _rect_folder(tmp_path / "other", [(30, 30)] * 3, rng)
    spec = ModelSpec(model="vgg", dataset="imagefolder", num_classes=2, in_channels=3, input_size=[3, 12, 20],
                     mean=[0.5] * 3, std=[0.25] * 3, data_dir=str(tmp_path / "rect"))
    data = load_data_for_spec(spec, data_dir=tmp_path / "other", val_size=1, calib_size=1)
    assert data.image_size == (12, 20)


def test_a_large_folder_is_read_with_a_progress_bar_on_a_terminal_only(image_dir, monkeypatch, capsys):
    """Decoding tens of thousands of photos took minutes without a word; on a terminal a bar counts them (logs and
    pipes stay clean)."""
    from entroprune import data

    monkeypatch.setattr(data, "PROGRESS_FILES", 10)
    load_dataset("imagefolder", image_dir, val_size=1, calib_size=1)
    assert "read images" not in capsys.readouterr().err  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    load_dataset("imagefolder", image_dir, val_size=1, calib_size=1)
    err = capsys.readouterr().err
    assert "read images" in err and "16/16" in err, err


def test_jpeg_photos_are_decoded_at_a_reduced_scale_when_read_smaller(tmp_path):
    """A 12-megapixel photo read at 64x64 was decoded whole (about 0.1 s each); JPEG's own 1/2-1/8 scales decode
    it at the smallest one still large enough, then it is resized as before: the same picture."""
    from PIL import Image, JpegImagePlugin

    from entroprune import data

    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).resize((1600, 1200))
    photo.save(tmp_path / "p.jpg", quality=95)
    decoded = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        out = real_draft(self, mode, size)
        decoded.append(self.size)
        return out

    import unittest.mock

    with unittest.mock.patch.object(JpegImagePlugin.JpegImageFile, "draft", draft):
        small = data._read_image(tmp_path / "p.jpg", "RGB", (60, 80))
    assert decoded == [(200, 150)]  # 1/8 of 1600x1200, still at least 80x60
    full = np.asarray(photo.resize((80, 60), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
    assert small.shape == (3, 60, 80) and np.abs(small - full).mean() < 0.03


def test_a_folder_too_large_for_memory_is_refused_before_decoding(image_dir, monkeypatch):
    """Phone photos read at their own 3024x4032 were an out-of-memory kill after minutes of decoding: the
    headers give the size, and a folder whose float32 arrays would not fit is one line naming `image_size`."""
    from entroprune import data

    decoded = []
    monkeypatch.setattr(data, "_read_image", lambda *a: decoded.append(a) or np.zeros((3, 10, 10), np.float32))
    need = 2 * 4 * 16 * 3 * 10 * 10  # 16 images of 10x10 in colour, decoded and stacked
    monkeypatch.setattr(data, "available_memory", lambda: need - 1)
    with pytest.raises(DataError, match=re.escape("16 images of 10x10 pixels (3 channel(s)) need about 0.0 GiB of "
                                                  "memory as float32 and 0.0 GiB are available; read them at the size "
                                                  "the model takes (`image_size`)")):
        load_dataset("imagefolder", image_dir)
    assert not decoded
    monkeypatch.setattr(data, "available_memory", lambda: need)
    assert len(load_dataset("imagefolder", image_dir, val_size=1, calib_size=1).train) > 0 and decoded
    monkeypatch.setattr(data, "available_memory", lambda: None)  # unknown: not checked
    load_dataset("imagefolder", image_dir, val_size=1, calib_size=1)


def test_images_of_several_sizes_take_the_most_common_one_and_say_so(tmp_path):
    """The first file's size was every image's, silently: one odd image sorted first resized the whole folder."""
    _rect_folder(tmp_path / "mixed", [(30, 40), (12, 20), (12, 20), (12, 20)], np.random.default_rng(7))
    with pytest.warns(UserWarning, match=re.escape("2 of 8 images in ") + ".*" + re.escape(
            "are not 20x12 pixels, the most common size, and are resized to it")):
        d = load_dataset("imagefolder", tmp_path / "mixed", val_size=1, calib_size=1)
    assert d.image_size == (12, 20)

def test_unreadable_images_are_skipped_with_one_warning(image_dir):
    (image_dir / "cat" / "0.png").write_bytes(b"not a png")
    (image_dir / "dog" / "3.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\)") as record:
        d = load_dataset("imagefolder", image_dir, val_size=2, calib_size=2)
    assert len([w for w in record if "unreadable" in str(w.message)]) == 1
    assert len(d.train) + len(d.val) + len(d.calib) + len(d.test) == 14
    for f in (image_dir / "cat").iterdir():
        f.write_bytes(b"junk")
    for f in (image_dir / "dog").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable image in"):
        load_dataset("imagefolder", image_dir)


def test_npz(npz_file):
    d = load_dataset("npz", npz_file, val_size=4, calib_size=4, min_size=16)
    assert d.num_classes == 4 and d.image_size == (16, 16)  # upsampled for the model
    x, _ = next(iter(d.loader("train", 8, shuffle=True, augment=True)))
    assert x.shape == (8, 1, 16, 16) and torch.isfinite(x).all()


def test_npz_bad(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((10, 5, 5)), y=np.zeros(9, int))
    with pytest.raises(DataError, match="labels"):
        load_dataset("npz", p)
    p.write_bytes(b"PK\x03\x04broken")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", p)


def test_deep_greyscale_images_keep_their_range(tmp_path):
    """16-bit PNGs (microscopy, X-ray, depth maps) read almost all white (PIL's convert("L") clips at 255) and
    float TIFFs in [0, 1] all black; each is scaled by its own depth's white, beside 8-bit images and in colour
    folders too."""
    from PIL import Image

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    ramp = np.linspace(0, 1, 36, dtype=np.float32).reshape(6, 6)
    for i in range(4):
        save(tmp_path / "g" / "deep" / f"{i}.png", (ramp * 65535).round().astype(np.uint16))
        save(tmp_path / "g" / "float" / f"{i}.tif", ramp * 0.5)
        save(tmp_path / "g" / "plain" / f"{i}.png", (ramp * 255).round().astype(np.uint8))
    d = load_dataset("imagefolder", tmp_path / "g", val_size=1, calib_size=1)
    assert d.in_channels == 1
    by_class = {0: ramp, 1: ramp * 0.5, 2: ramp}  # deep, float (taken as stored), plain
    for split in (d.train, d.val, d.calib, d.test):
        for x, y in zip(split.x, split.y, strict=True):
            assert np.allclose(x[0].numpy(), by_class[int(y)], atol=0.003), int(y)
    save(tmp_path / "g" / "plain" / "colour.png", np.zeros((6, 6, 3), np.uint8))  # the folder is colour now
    d = load_dataset("imagefolder", tmp_path / "g", val_size=1, calib_size=1)
    deep = torch.cat([s.x[s.y == 0] for s in (d.train, d.val, d.calib, d.test)])
    assert d.in_channels == 3 and len(deep) == 4 and np.allclose(deep.numpy(), ramp, atol=1e-4)
    d = load_dataset("imagefolder", tmp_path / "g", val_size=1, calib_size=1, image_size=12)  # resized, not clipped
    deep = torch.cat([s.x[s.y == 0] for s in (d.train, d.val, d.calib, d.test)])
    assert deep.shape[-2:] == (12, 12) and 0.45 < float(deep.mean()) < 0.55


def test_a_folder_is_colour_if_any_image_is(tmp_path):
    """The first 64 files decided: a folder whose first class held 65 greyscale images trained a greyscale model
    on the colour images of the others, their colour dropped."""
    from PIL import Image

    rng = np.random.default_rng(9)
    for c, n, shape in (("a_grey", 65, (8, 8)), ("b_colour", 3, (8, 8, 3))):
        (tmp_path / c).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / c / f"{i:03d}.png")
    d = load_dataset("imagefolder", tmp_path, val_size=2, calib_size=2)
    assert d.in_channels == 3


def test_npz_test_split_given_in_part_is_named_not_dropped(tmp_path):
    """x_test without y_test (or y_test alone) was ignored without a word, and a fifth of x carved as the test split
    in its place; an unlabelled npz's x_test is its unlabelled test split."""
    rng = np.random.default_rng(8)
    x, xt = rng.integers(0, 255, (50, 9, 9), dtype=np.uint8), rng.integers(0, 255, (7, 9, 9), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(50) % 2, x_test=xt)
    with pytest.raises(DataError, match="has x_test but no y_test"):
        load_dataset("npz", tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(50) % 2, y_test=np.arange(7) % 2)
    with pytest.raises(DataError, match="has y_test but no x_test"):
        load_dataset("npz", tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=x, x_test=xt)
    d = load_dataset("npz", tmp_path / "c.npz", val_size=2, calib_size=2)
    assert len(d.test.x) == 7 and not d.labelled


def test_signals_npz_reads_one_dimensional_inputs(tmp_path):
    """(N, C, L) signals (or (N, L), one channel), kept at their own scale and length, normalised per channel,
    shifted along time by the augmentation; a test split of their own; every other shape one line."""
    rng = np.random.default_rng(0)
    p = tmp_path / "sig.npz"
    np.savez(p, x=rng.normal(3, 2, (40, 2, 30)).astype(np.float32), y=np.arange(40) % 4,
             x_test=rng.normal(3, 2, (8, 2, 30)), y_test=np.arange(8) % 4)
    d = load_dataset("signals", p, val_size=4, calib_size=4, min_size=32)  # no resampling of signals
    assert (d.num_classes, d.in_channels, d.image_size, len(d.test)) == (4, 2, (30,), 8)
    assert d.mean == pytest.approx(d.train.x.mean((0, 2)).tolist()) and 2.5 < d.mean[0] < 3.5
    x, _ = next(iter(d.loader("train", 8)))
    assert x.shape == (8, 2, 30) and abs(float(x.mean())) < 0.5 and torch.equal(d.normalize(d.train.x[:8]), x)
    shifted = [x for x, _ in d.loader("train", 32, augment="shift", seed=1)][0]
    plain = [x for x, _ in d.loader("train", 32)][0]
    lead = ((plain - shifted).abs().amax((1, 2)) == 0).float().mean()
    assert shifted.shape == plain.shape and lead < 0.5  # most signals moved along time
    np.savez(p, x=rng.normal(size=(40, 30)), y=np.arange(40) % 4)
    assert load_dataset("signals", p, val_size=4, calib_size=4).image_size == (30,)
    np.savez(p, x=rng.normal(size=(40, 1, 5, 5)), y=np.arange(40) % 4)
    with pytest.raises(DataError, match=re.escape("signals must be numbers of shape (N, L) or (N, C, L), got "
                                                  "float64 (40, 1, 5, 5); reshape x")):
        load_dataset("signals", p)





def test_volumes_npz_reads_videos_and_scans(tmp_path):
    """(N, C, D, H, W) volumes (or (N, D, H, W), one channel): uint8 divided by 255 as images are, other types as
    stored; the shift augmentation moves every slice of a volume by the same pixels; other shapes one line."""
    from entroprune.data import BatchLoader, ImageSet

    rng = np.random.default_rng(0)
    p = tmp_path / "vol.npz"
    np.savez(p, x=rng.integers(0, 256, (30, 3, 5, 8, 8)).astype(np.uint8), y=np.arange(30) % 3)
    d = load_dataset("volumes", p, val_size=3, calib_size=3, min_size=32)  # never resampled
    assert (d.num_classes, d.in_channels, d.image_size) == (3, 3, (5, 8, 8)) and d.train.x.max() <= 1
    hu = rng.normal(-500, 400, (30, 5, 8, 8))  # a scan's own units
    np.savez(p, x=hu, y=np.arange(30) % 3)
    d = load_dataset("volumes", p, val_size=3, calib_size=3)
    assert d.in_channels == 1 and float(d.train.x.min()) < -1000
    x = torch.zeros(16, 1, 4, 9, 9)
    x[:, :, :, 4, 4] = 1.0
    (batch, _), = list(BatchLoader(ImageSet(x, torch.zeros(16, dtype=torch.long)), [0.0], [1.0], 16, False, "shift",
                                   False, 0, torch.device("cpu")))
    where = [[tuple((v[0, t] == 1).nonzero()[0].tolist()) for t in range(4)] for v in batch]
    assert all(len(set(w)) == 1 for w in where) and len({w[0] for w in where}) > 1  # moved, slices together
    np.savez(p, x=np.zeros((30, 8, 8)), y=np.arange(30) % 3)
    with pytest.raises(DataError, match=re.escape("volumes must be numbers of shape (N, D, H, W) or (N, C, D, H, W), "
                                                  "got float64 (30, 8, 8); reshape x")):
        load_dataset("volumes", p)

def test_signal_shift_scales_with_the_length():
    """The shift augmentation moves a 1-D signal by up to a tenth of its length (100 ms of a 1 s clip, as keyword
    spotting trains), an image by up to 2 pixels."""
    from entroprune.data import BatchLoader, ImageSet

    x = torch.zeros(64, 1, 1000)
    x[:, 0, 500] = 1.0
    loader = BatchLoader(ImageSet(x, torch.zeros(64, dtype=torch.long)), [0.0], [1.0], 64, False, "shift", False, 0,
                         torch.device("cpu"))
    (batch, _), = list(loader)
    moved = batch[:, 0].argmax(1) - 500
    assert moved.abs().max() <= 100 and moved.abs().max() > 50 and len(set(moved.tolist())) > 20
    images = ImageSet(torch.zeros(64, 1, 40, 40).index_fill_(2, torch.tensor([20]), 1.0), torch.zeros(64, dtype=torch.long))
    (batch, _), = list(BatchLoader(images, [0.0], [1.0], 64, False, "shift", False, 0, torch.device("cpu")))
    assert set((batch[:, 0, :, 20].argmax(1) - 20).tolist()) <= {-2, -1, 0, 1, 2}

def _wav(path, rate, samples):
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, samples)


def test_wav_folder_reads_raw_audio_as_signals(tmp_path):
    """Class sub-folders of WAV files: integer PCM scaled by its type (8-bit unsigned, 16- and 32-bit signed),
    float kept, stereo mixed down where the model takes one channel, clips cut or zero-padded at the end, the
    rate recorded; a train/ and test/ layout; a file scipy cannot read skipped with one warning."""
    root = tmp_path / "audio"
    ramp = np.linspace(-0.5, 0.5, 20)
    for i in range(4):
        _wav(root / "yes" / f"{i}.wav", 8000, (ramp * 32768).astype(np.int16))
        _wav(root / "no" / f"{i}.wav", 8000, (-ramp * 2**31).astype(np.int32)[:12 + i])
    _wav(root / "no" / "u8.wav", 8000, (ramp * 128 + 128).astype(np.uint8))
    _wav(root / "yes" / "stereo.wav", 8000, np.stack([ramp, -ramp + 0.2], 1).astype(np.float32))
    (root / "no" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable WAV file\(s\)"):
        d = load_dataset("wavfolder", root, val_size=1, calib_size=1, seed=0, in_channels=1)
    assert (d.num_classes, d.in_channels, d.image_size, d.sample_rate) == (2, 1, (20,), 8000)
    x = torch.cat([d.train.x, d.val.x, d.calib.x, d.test.x])[:, 0]
    y = torch.cat([d.train.y, d.val.y, d.calib.y, d.test.y])
    assert len(x) == 10 and (y == 0).sum() == 5  # "no" sorts first
    yes = x[y == 1]
    assert sum(torch.allclose(r, torch.tensor(ramp, dtype=torch.float32), atol=1e-4) for r in yes) == 4  # 16-bit
    assert sum(torch.allclose(r, torch.full((20,), 0.1), atol=1e-6) for r in yes) == 1  # the stereo clip's mean
    no = x[y == 0]
    assert sum(torch.allclose(r, torch.tensor(ramp, dtype=torch.float32), atol=1e-2) for r in no) == 1  # 8-bit
    padded = [r for r in no if r[0] > 0.49]  # the 32-bit clips, shorter than the median's 20 samples: zero-padded
    assert len(padded) == 4 and all(r[12:].abs().max() <= 0.5 and r[-1] == 0 for r in padded)
    short = load_dataset("wavfolder", root / "yes", val_size=1, calib_size=1, image_size=8, in_channels=1)
    assert short.image_size == (8,) and not short.labelled
    with pytest.warns(UserWarning, match="have 1 and 2 channels; every file is mixed down to mono"):
        assert load_dataset("wavfolder", root / "yes", val_size=1, calib_size=1).in_channels == 1
    for i in range(4):  # one long recording among short clips: every clip at the median's length, not its
        _wav(tmp_path / "flat" / f"{i}.wav", 8000, np.ones(100_000 if i == 2 else 10, np.int16))
    assert load_dataset("wavfolder", tmp_path / "flat", val_size=1, calib_size=1).image_size == (10,)
    split = tmp_path / "split"
    for part in ("train", "test"):
        for c in ("a", "b"):
            for i in range(4):
                _wav(split / part / c / f"{i}.wav", 16000, (ramp * (1 + i) * 1000).astype(np.int16))
    d = load_dataset("wavfolder", split, val_size=1, calib_size=1)
    assert (len(d.test), d.sample_rate) == (8, 16000)


def test_a_wav_folder_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    """Every file is read whole before clips are cut: hours of recordings were an out-of-memory kill."""
    from entroprune import data

    for i in range(6):
        _wav(tmp_path / "a" / "cd"[i % 2] / f"{i}.wav", 8000, np.zeros(4000, np.int16))
    stored = sum(f.stat().st_size for f in (tmp_path / "a").rglob("*.wav"))
    monkeypatch.setattr(data, "_read_wav", lambda f: pytest.fail(f"read {f}"))
    monkeypatch.setattr(data, "available_memory", lambda: 4 * stored - 1)
    with pytest.raises(DataError, match=r"6 WAV files in .* hold 0\.0 GiB, about 0\.0 GiB of memory as float32 "
                                        r"samples, and 0\.0 GiB are available; cut the recordings into clips"):
        load_dataset("wavfolder", tmp_path / "a")
    monkeypatch.undo()
    monkeypatch.setattr(data, "available_memory", lambda: 4 * stored)
    assert len(load_dataset("wavfolder", tmp_path / "a", val_size=1, calib_size=1).test) == 1  # a fifth of six


def test_wav_folder_refusals(tmp_path):
    """Every way a WAV folder cannot be read is one line naming the file and the fix."""
    root = tmp_path / "audio"
    for i in range(3):
        _wav(root / "a" / f"{i}.wav", 8000, np.zeros(10, np.int16))
        _wav(root / "b" / f"{i}.wav", 8000, np.zeros((10, 2), np.int16))
    with pytest.warns(UserWarning, match="have 1 and 2 channels; every file is mixed down to mono"):
        assert load_dataset("wavfolder", root).in_channels == 1
    with pytest.raises(DataError, match=r"a/0.wav has 1 channel\(s\) but the model takes 2; give every file 2"):
        load_dataset("wavfolder", root, in_channels=2)
    stereo_first = tmp_path / "stereo_first"  # the first file decided: stereo first refused the mono files
    for i in range(3):
        _wav(stereo_first / "a" / f"{i}.wav", 8000, np.zeros((10, 2), np.int16))
        _wav(stereo_first / "b" / f"{i}.wav", 8000, np.zeros(10, np.int16))
    with pytest.warns(UserWarning, match="every file is mixed down to mono"):
        assert load_dataset("wavfolder", stereo_first).in_channels == 1
    _wav(root / "b" / "1.wav", 16000, np.zeros(10, np.int16))
    with pytest.raises(DataError, match=r"b/1.wav is sampled at 16000 Hz but .*a/0.wav at 8000 Hz; resample"):
        load_dataset("wavfolder", root, in_channels=1)
    _wav(root / "a" / "0.wav", 8000, np.array([0.0, np.nan], np.float32))
    with pytest.raises(DataError, match="a/0.wav contains NaN or Inf samples"):
        load_dataset("wavfolder", root)
    (tmp_path / "empty" / "a" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "sub" / "notes.txt").write_text("no audio")
    for bad, msg in ((tmp_path / "none", "audio folder .*none does not exist"),
                     (tmp_path / "empty", "no WAV files found in")):
        with pytest.raises(DataError, match=msg):
            load_dataset("wavfolder", bad)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.wav").write_bytes(b"nope")
    _wav(junk / "none.wav", 8000, np.zeros((10, 0), np.int16))  # no channels: scipy divides by zero reading it
    with pytest.raises(DataError, match="no readable WAV file in"):
        load_dataset("wavfolder", junk)
    split = tmp_path / "split"
    for part, rate in (("train", 8000), ("test", 16000)):
        for c in ("a", "b"):
            for i in range(3):
                _wav(split / part / c / f"{i}.wav", rate, np.zeros(10, np.int16))
    with pytest.raises(DataError, match=r"split/test is sampled at 16000 Hz but .*split/train at 8000 Hz"):
        load_dataset("wavfolder", split)

def test_single_class(tmp_path):
    p = tmp_path / "one.npz"
    np.savez(p, x=np.zeros((10, 5, 5), np.uint8), y=np.zeros(10, int))
    with pytest.raises(DataError, match="single class"):
        load_dataset("npz", p)


def test_labels_that_leave_classes_empty_are_named(tmp_path):
    """Labels numbered from 1 (or with gaps) make a class per number below the highest: outputs that never see an
    image, which trained without a word. A warning names them; labels from 0 without gaps say nothing."""
    import warnings

    x = np.zeros((40, 8, 8), np.uint8)
    np.savez(tmp_path / "one_based.npz", x=x, y=np.arange(40) % 4 + 1)
    with pytest.warns(UserWarning, match=re.escape("dataset npz: 1 of the 5 classes its labels number have no image "
                                                   "(class 0): the model gets an output for each that never learns")):
        assert load_dataset("npz", tmp_path / "one_based.npz", val_size=4, calib_size=4).num_classes == 5
    np.savez(tmp_path / "from_zero.npz", x=x, y=np.arange(40) % 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("npz", tmp_path / "from_zero.npz", val_size=4, calib_size=4)


def test_digits_and_augmentation_deterministic():
    d = load_dataset("digits", seed=0)
    assert d.num_classes == 10 and len(d.test) == 359
    a = [x for x, _ in d.loader("train", 64, shuffle=True, augment=True, seed=1)]
    b = [x for x, _ in d.loader("train", 64, shuffle=True, augment=True, seed=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    x, _ = next(iter(d.loader("train", 512)))
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1  # normalised


def test_digits_are_scikit_learns_without_importing_it(monkeypatch, tmp_path):
    """Read from the CSV scikit-learn ships, pixel for pixel its load_digits; where that file is not found,
    load_digits itself; a corrupt one is one line."""
    import importlib.util

    from sklearn.datasets import load_digits

    from entroprune.data import _digits

    want = load_digits()
    x, y, test = _digits()
    assert test is None and x.dtype == np.float32 and x.shape == (1797, 1, 8, 8)
    assert np.array_equal(x[:, 0] * 16, want.images) and np.array_equal(y, want.target)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    x2, y2, _ = _digits()
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    (tmp_path / "datasets" / "data").mkdir(parents=True)
    (tmp_path / "datasets" / "data" / "digits.csv.gz").write_bytes(b"\x1f\x8btruncated")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: type("Spec", (), {
        "submodule_search_locations": [str(tmp_path)]}))
    with pytest.raises(DataError, match="digits.csv.gz: .* corrupt or truncated"):
        _digits()


def test_digits_refuses_a_named_folder_but_ignores_one_a_checkpoint_recorded(tmp_path):
    """digits is built in: a folder the user names is refused (reading digits anyway would let them believe
    their folder was used), while one recorded by a checkpoint trained before that refusal is ignored."""
    from entroprune.api import load_data_for_spec
    from entroprune.checkpoint import ModelSpec

    with pytest.raises(DataError, match=f"digits is built in .* names {tmp_path}"):
        load_dataset("digits", tmp_path)
    spec = ModelSpec("vgg", 10, 1, 1.0, "digits", [0.5], [0.5], [1, 8, 8], data_dir=str(tmp_path))
    assert load_data_for_spec(spec, val_size=5, calib_size=5).num_classes == 10
