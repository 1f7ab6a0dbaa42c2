import subprocess

import pytest


def pytest_addoption(parser):
    parser.addoption("--longtune-bin", required=True, help="folder holding the longtune binary")


@pytest.fixture(scope="session")
def longtune(request):
    return request.config.getoption("--longtune-bin") + "/longtune"


def words(seed, n):
    vocab = ("the whale sea ship captain and of a long voyage night storm harbour sailor said "
             "white deep wind rope deck mast 1851 come go old man").split()
    state = seed * 2654435761 + 1
    out = []
    for i in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(vocab[(state >> 33) % len(vocab)])
        if i % 13 == 12:
            out[-1] += ".\n"
    return " ".join(out)


@pytest.fixture(scope="session")
def data(tmp_path_factory, longtune):
    root = tmp_path_factory.mktemp("corpus")
    for split, books in (("train", 12), ("validation", 2)):
        (root / split).mkdir()
        for b in range(books):
            (root / split / f"{b}.txt").write_text(words(b + (100 if split == "validation" else 0), 3000))
    prefix = root / "tok"
    subprocess.run([longtune, "tokenizer", "train", "--input", str(root), "--vocab-size", "320",
                    "--out", str(prefix)], check=True, capture_output=True)
    out = root / "tokens"
    subprocess.run([longtune, "prepare-data", "--input", str(root), "--tokenizer", f"{prefix}.model",
                    "--out", str(out), "--quiet"], check=True, capture_output=True)
    return {"data": str(out), "tokenizer": f"{prefix}.model"}
