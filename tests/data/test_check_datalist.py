import numpy as np
import pytest

from monai_aegis.data import check_datalist


@pytest.fixture
def files(tmp_path, write_png):
    return [str(write_png(tmp_path / f"ok{i}.png", seed=i)) for i in range(3)]


def test_valid_datalist_passes_and_is_returned(files):
    items = [{"image": f, "label": i % 2} for i, f in enumerate(files)]
    assert check_datalist(items, num_classes=2, try_load=True) is items
    check_datalist([{"image": np.zeros((1, 2, 2)), "label": np.int64(1)}], num_classes=2)


def test_label_errors(files):
    with pytest.raises(ValueError, match=r"datalist\[1\] \(.*ok1.png\): label 2 is outside \[0, 1\]"):
        check_datalist([{"image": files[0], "label": 0}, {"image": files[1], "label": 2}], num_classes=2)
    with pytest.raises(ValueError, match="label 3 is outside"):
        check_datalist([{"image": np.zeros(1), "label": np.array([0, 3])}], num_classes=2)
    with pytest.raises(ValueError, match="must be an integer class index, got 'cat'"):
        check_datalist([{"image": files[0], "label": "cat"}])
    with pytest.raises(ValueError, match="has no 'label' key"):
        check_datalist([{"image": files[0]}])
    with pytest.raises(ValueError, match="label -1 is outside"):
        check_datalist([{"image": files[0], "label": -1}], num_classes=3)


def test_structure_errors(files):
    with pytest.raises(ValueError, match="datalist is empty"):
        check_datalist([])
    with pytest.raises(ValueError, match=r"datalist\[0\] must be a dict"):
        check_datalist([files[0]])
    with pytest.raises(ValueError, match="has no 'img' key"):
        check_datalist([{"image": files[0], "label": 0}], image_key="img")
    with pytest.raises(ValueError, match="must be a list of dicts"):
        check_datalist("a.png")


def test_missing_and_corrupt_files_named(tmp_path, files):
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) not found: '.*gone.png'"):
        check_datalist([{"image": files[0], "label": 0}, {"image": str(tmp_path / "gone.png"), "label": 0}])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(files[1], "rb").read()[:60])
    items = [{"image": f, "label": 0} for f in (files[0], str(corrupt), files[2], str(truncated))]
    check_datalist(items)  # without try_load the files are only checked for existence
    msg = r"2 image file\(s\) cannot be loaded: '.*corrupt.png' \(.*\); '.*truncated.png'"
    with pytest.raises(ValueError, match=msg):
        check_datalist(items, try_load=True)
    with pytest.raises(ValueError, match=r"cannot be loaded: '.*corrupt.png' \(.*\) \(\+1 more\)"):
        check_datalist(items, try_load=True, max_reported=1)
