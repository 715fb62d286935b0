import hashlib

import pytest

from pipeline.io import file_digest


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_file_digest_is_the_digest_of_the_files_bytes(tmp_path, algorithm):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # over one read buffer
    path.write_bytes(data)
    assert file_digest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()


def test_file_digest_defaults_to_sha256(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("cell")
    assert file_digest(path) == hashlib.sha256(b"cell").hexdigest()
