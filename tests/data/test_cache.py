import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from germinate.data import cache as cache_mod
from germinate.data.cache import decode_images
from germinate.data.folders import scan_labelled


def _count_decodes(monkeypatch) -> list:
    calls = []
    real = cache_mod.read_image

    def counting(path, px):
        calls.append(path)
        return real(path, px)

    monkeypatch.setattr(cache_mod, "read_image", counting)
    return calls


def test_cache_decodes_once_and_matches_direct_decoding(labelled: Path, tmp_path: Path, monkeypatch):
    files = scan_labelled(labelled).files
    calls = _count_decodes(monkeypatch)
    first = decode_images(files, 24, tmp_path / "c", workers=1)
    assert len(calls) == len(files)
    second = decode_images(files, 24, tmp_path / "c", workers=1)
    assert len(calls) == len(files)  # nothing decoded again
    direct = decode_images(files, 24, use_cache=False, workers=1)
    for i in range(len(files)):
        assert np.array_equal(first.source.get(i).numpy(), second.source.get(i).numpy())
        assert np.array_equal(first.source.get(i).numpy(), direct.source.get(i).numpy())


def test_changed_file_is_decoded_again(labelled: Path, tmp_path: Path, monkeypatch):
    files = scan_labelled(labelled).files
    decode_images(files, 24, tmp_path / "c", workers=1)
    Image.new("RGB", (30, 30), (0, 0, 0)).save(files[0])
    os.utime(files[0], ns=(1, 1))  # a different modification time
    calls = _count_decodes(monkeypatch)
    again = decode_images(files, 24, tmp_path / "c", workers=1)
    assert [Path(c) for c in calls] == [files[0].resolve()]
    assert again.source.get(0).max() == 0


def test_unreadable_entries_are_remembered_and_skipped(labelled: Path, tmp_path: Path):
    bad = labelled / "Red leaf" / "bad.png"
    bad.write_bytes(b"nope")
    files = scan_labelled(labelled).files
    result = decode_images(files, 24, tmp_path / "c", workers=1)
    assert [Path(s.path).name for s in result.skipped] == ["bad.png"]
    assert len(result.ok) == len(files) - 1 and len(result.source) == len(files) - 1


def test_parallel_build_equals_serial(labelled: Path, tmp_path: Path):
    files = scan_labelled(labelled).files
    serial = decode_images(files, 20, tmp_path / "a", workers=1)
    parallel = decode_images(files, 20, tmp_path / "b", workers=2)
    assert all(np.array_equal(serial.source.get(i), parallel.source.get(i)) for i in range(len(files)))


def test_torn_tail_from_a_killed_writer_is_dropped(labelled: Path, tmp_path: Path):
    files = scan_labelled(labelled).files
    decode_images(files[:5], 16, tmp_path / "c", workers=1)
    data = tmp_path / "c" / "v1" / "px16" / "images.u8"
    with open(data, "ab") as f:
        f.write(b"\x07" * 100)  # half a row, as if killed mid-append
    result = decode_images(files, 16, tmp_path / "c", workers=1)
    assert data.stat().st_size == len(files) * 16 * 16 * 3
    direct = decode_images(files, 16, use_cache=False, workers=1)
    assert all(np.array_equal(result.source.get(i), direct.source.get(i)) for i in range(len(files)))


def test_a_corrupt_index_never_truncates_rows_another_process_has_mapped(labelled: Path, tmp_path: Path):
    files = scan_labelled(labelled).files
    first = decode_images(files, 16, tmp_path / "c", workers=1)  # a reader holding the mapping
    before = [first.source.get(i).clone() for i in range(len(files))]
    (tmp_path / "c" / "v1" / "px16" / "index.json").write_text("{not json")
    again = decode_images(files, 16, tmp_path / "c", workers=1)
    assert all(np.array_equal(before[i], first.source.get(i)) for i in range(len(files)))  # still readable, unchanged
    assert all(np.array_equal(before[i], again.source.get(i)) for i in range(len(files)))


def test_the_cache_is_bounded_least_recently_used_first(labelled: Path, tmp_path: Path, monkeypatch):
    from germinate.data.cache import FileSource

    files = scan_labelled(labelled).files  # 36 images
    row = lambda px: px * px * 3  # noqa: E731
    # room for the 16 and 20 px rows and their indexes (about 5 kB each), not for 18 px rows too
    monkeypatch.setenv("GERMINATE_CACHE_GB", str((36 * row(20) + 36 * row(16) + 20_000) / 2**30))
    decode_images(files, 16, tmp_path / "c", workers=1)
    os.utime(tmp_path / "c" / "v1" / "px16" / "index.json", (1, 1))  # long unused
    decode_images(files, 20, tmp_path / "c", workers=1)
    assert (tmp_path / "c" / "v1" / "px16").exists()  # both fit
    decode_images(files, 18, tmp_path / "c", workers=1)  # does not fit beside both: px16 goes first
    assert not (tmp_path / "c" / "v1" / "px16").exists() and (tmp_path / "c" / "v1" / "px20").exists()
    too_big = decode_images(files, 40, tmp_path / "c", workers=1)  # larger than the whole bound
    assert isinstance(too_big.source, FileSource) and not (tmp_path / "c" / "v1" / "px40" / "images.u8").exists()
    assert (tmp_path / "c" / "v1" / "px20").exists()  # nothing was evicted for it in vain
    direct = decode_images(files, 40, use_cache=False, workers=1)
    assert np.array_equal(too_big.source.get(3), direct.source.get(3))


def _copied_anew(files: list[Path], t: int) -> None:
    """Every file given new times, as a dataset fetched again is: each is decoded again."""
    for f in files:
        os.utime(f, ns=(t, t))


def test_rows_of_files_decoded_again_are_dropped_once_they_outnumber_those_in_use(labelled: Path, tmp_path: Path,
                                                                                  monkeypatch):
    monkeypatch.setattr(cache_mod, "COMPACT_MIN_BYTES", 0)
    files = scan_labelled(labelled).files  # 36 images
    size = tmp_path / "c" / "v1" / "px16"
    first = decode_images(files, 16, tmp_path / "c", workers=1)  # a reader that keeps its mapping
    before = [first.source.get(i).clone() for i in range(len(files))]
    _copied_anew(files, 10**18)
    decode_images(files, 16, tmp_path / "c", workers=1)  # 36 rows unused, 36 in use: kept
    assert json.loads((size / "index.json").read_text())["rows"] == 72
    assert [e["images"] for e in cache_mod.cache_info(tmp_path / "c")] == [36]  # the rows in use
    _copied_anew(files, 2 * 10**18)
    again = decode_images(files, 16, tmp_path / "c", workers=1)  # 72 unused against 36: dropped
    index = json.loads((size / "index.json").read_text())
    assert index["rows"] == 36 and sorted(e[2] for e in index["entries"].values()) == list(range(36))
    assert [p.name for p in size.glob("*.u8")] == [index["data"]]
    assert (size / index["data"]).stat().st_size == 36 * 16 * 16 * 3
    # the new file's rows are the images, for this load, the next one and the old reader alike
    later = decode_images(files, 16, tmp_path / "c", workers=1)
    for i in range(len(files)):
        assert np.array_equal(again.source.get(i), before[i]) and np.array_equal(later.source.get(i), before[i])
        assert np.array_equal(first.source.get(i), before[i])
    # a changed file's new row goes after the compacted rows and reads back as decoded
    Image.new("RGB", (30, 30), (255, 0, 0)).save(files[0])
    os.utime(files[0], ns=(3 * 10**18, 3 * 10**18))
    red = decode_images(files, 16, tmp_path / "c", workers=1)
    assert red.source.get(0)[0].min() == 255 and np.array_equal(red.source.get(5), before[5])
    assert json.loads((size / "index.json").read_text())["rows"] == 37


def test_small_caches_are_not_compacted(labelled: Path, tmp_path: Path):
    files = scan_labelled(labelled).files
    decode_images(files, 16, tmp_path / "c", workers=1)
    for t in (10**18, 2 * 10**18):
        _copied_anew(files, t)
        decode_images(files, 16, tmp_path / "c", workers=1)
    assert json.loads((tmp_path / "c" / "v1" / "px16" / "index.json").read_text())["rows"] == 108  # under 64 MiB


def test_a_compaction_killed_before_its_index_leaves_the_cache_as_it_was(labelled: Path, tmp_path: Path,
                                                                         monkeypatch):
    import pytest

    monkeypatch.setattr(cache_mod, "COMPACT_MIN_BYTES", 0)
    files = scan_labelled(labelled).files
    expected = [decode_images(files, 16, use_cache=False, workers=1).source.get(i) for i in range(len(files))]
    decode_images(files, 16, tmp_path / "c", workers=1)
    _copied_anew(files, 10**18)
    decode_images(files, 16, tmp_path / "c", workers=1)
    real = cache_mod.DiskCache._write_index

    def killed_at_the_switch(self, index):
        if "generation" in index:
            raise KeyboardInterrupt  # killed after the new data file, before the index naming it
        real(self, index)

    monkeypatch.setattr(cache_mod.DiskCache, "_write_index", killed_at_the_switch)
    _copied_anew(files, 2 * 10**18)
    with pytest.raises(KeyboardInterrupt):
        decode_images(files, 16, tmp_path / "c", workers=1)
    monkeypatch.setattr(cache_mod.DiskCache, "_write_index", real)
    calls = _count_decodes(monkeypatch)
    after = decode_images(files, 16, tmp_path / "c", workers=1)  # the old index and file: nothing to decode
    assert calls == [] and all(np.array_equal(after.source.get(i), expected[i]) for i in range(len(files)))
    _copied_anew(files, 3 * 10**18)
    again = decode_images(files, 16, tmp_path / "c", workers=1)  # the next compaction goes through
    size = tmp_path / "c" / "v1" / "px16"
    assert [p.name for p in size.glob("*.u8")] == [json.loads((size / "index.json").read_text())["data"]]
    assert all(np.array_equal(again.source.get(i), expected[i]) for i in range(len(files)))
