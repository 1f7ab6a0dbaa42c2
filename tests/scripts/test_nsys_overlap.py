"""scripts/nsys_overlap.py on synthetic Nsight Systems exports (the CUPTI tables it reads, with
nsys's column names), so the GPU script's overlap verdict is checked without a GPU."""
import importlib.util
import pathlib
import sqlite3

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "nsys_overlap.py"
spec = importlib.util.spec_from_file_location("nsys_overlap", SCRIPT)
nsys_overlap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nsys_overlap)

COMPUTE, NCCL_STREAM = 7, 13


def make_profile(path, kernels, copies):
    """kernels: (start, end, stream, name); copies: (start, end, stream, copyKind)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER, end INTEGER, deviceId INTEGER, "
               "streamId INTEGER, correlationId INTEGER, shortName INTEGER, demangledName INTEGER)")
    db.execute("CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER, end INTEGER, deviceId INTEGER, "
               "streamId INTEGER, bytes INTEGER, copyKind INTEGER)")
    names = {}
    for i, (start, end, stream, name) in enumerate(kernels):
        if name not in names:
            names[name] = len(names) + 1
            db.execute("INSERT INTO StringIds VALUES (?, ?)", (names[name], name))
        db.execute("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, 0, ?, ?, ?, ?)",
                   (start, end, stream, i, names[name], names[name]))
    for start, end, stream, kind in copies:
        db.execute("INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (?, ?, 0, ?, 1024, ?)", (start, end, stream, kind))
    db.commit()
    db.close()


def test_gathers_beside_compute_overlap_and_serial_ones_do_not(tmp_path):
    # Compute kernels at [0,100) and [100,200) and [300,400); a copy on the NCCL stream at [150,250)
    # overlaps for 50 ns, one at [250,300) not at all; an NCCL kernel at [320,360) fully.
    kernels = [(0, 100, COMPUTE, "gemm"), (100, 200, COMPUTE, "flash_fwd"), (300, 400, COMPUTE, "gemm"),
               (320, 360, NCCL_STREAM, "ncclDevKernel_AllGather_RING_LL"),
               (500, 510, 99, "tiny_side_kernel")]
    copies = [(150, 250, NCCL_STREAM, nsys_overlap.MEMCPY_DEVICE_TO_DEVICE), (250, 300, NCCL_STREAM, 8),
              (0, 400, COMPUTE, 8),       # on the compute stream: not communication
              (0, 400, NCCL_STREAM, 1)]   # host to device: not communication
    path = tmp_path / "profile.sqlite"
    make_profile(path, kernels, copies)
    result = nsys_overlap.analyse(str(path))
    assert result["compute_stream"] == COMPUTE
    assert result["communication_ops"] == 3
    assert result["nccl_kernels"] == 1 and result["device_copies"] == 2
    assert result["communication_seconds"] == pytest.approx(190e-9)
    assert result["overlapped_seconds"] == pytest.approx(90e-9)
    assert result["overlap_fraction"] == pytest.approx(90 / 190)
    assert result["ops_with_any_overlap"] == 2


def test_collectives_on_the_compute_stream_count_and_never_overlap(tmp_path):
    kernels = [(0, 100, COMPUTE, "gemm"), (100, 150, COMPUTE, "ncclDevKernel_ReduceScatter_Sum_f32"),
               (150, 250, COMPUTE, "gemm")]
    path = tmp_path / "serial.sqlite"
    make_profile(path, kernels, [])
    result = nsys_overlap.analyse(str(path))
    assert result["compute_stream"] == COMPUTE
    assert result["communication_ops"] == 1 and result["communication_seconds"] == pytest.approx(50e-9)
    assert result["overlap_fraction"] == 0.0 and result["ops_with_any_overlap"] == 0


def test_a_profile_without_kernels_is_named(tmp_path):
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    with pytest.raises(SystemExit, match="empty.sqlite: no CUPTI_ACTIVITY_KIND_KERNEL"):
        nsys_overlap.analyse(str(path))
