import pytest

from rotwatch.config import Settings


def test_defaults_serve_the_local_stack():
    settings = Settings.from_env({})
    assert settings.project == "local-project"
    assert settings.model_root == ".rotwatch/models"
    assert settings.topic("feedback") == "projects/local-project/topics/feedback"
    assert settings.subscription("trainer") == \
        "projects/local-project/subscriptions/model-rot-trainer"


def test_environment_then_flags():
    env = {"GOOGLE_CLOUD_PROJECT": "acme-ml", "ROTWATCH_MODEL_ROOT": "gs://b/models"}
    assert Settings.from_env(env).project == "acme-ml"
    assert Settings.from_env({**env, "ROTWATCH_PROJECT": "acme-two"}).project == "acme-two"
    flagged = Settings.from_env(env, project="acme-three", model_root=None)
    assert flagged.project == "acme-three"
    assert flagged.model_root == "gs://b/models"


def test_bad_project_names_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"'test'.*ROTWATCH_PROJECT"):
        Settings.from_env({"ROTWATCH_PROJECT": "test"})
