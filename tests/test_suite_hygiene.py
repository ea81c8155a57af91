"""The suite keeps a developer's and CI's disk small (checkpoints of several GB per run)."""


def test_only_failed_tests_keep_their_temporary_folders(pytestconfig):
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
    assert int(pytestconfig.getini("tmp_path_retention_count")) == 1
