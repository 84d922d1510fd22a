"""Copy-paste over HTTP: an upload with masks says which classes have them; jobs without masks are a 422."""

from __future__ import annotations

from masked_datasets import upload_masked


def test_the_dataset_names_its_masked_classes_and_copy_paste_jobs_are_accepted(api_client, alpha):
    dataset = upload_masked(api_client, alpha)
    assert dataset["mask_classes"] == ["1"]
    train = dataset["splits"]["train"]
    assert train["masked_class_counts"][0] == 0 and train["masked_class_counts"][1] == train["class_counts"][1]
    for paste in ({}, {"classes": ["1"], "prob": 0.3, "scale": [0.5, 1.5], "blend": "none"}):
        body = {"dataset_id": dataset["id"], "augment": {"copy_paste": paste}}
        response = api_client.post("/v1/jobs", json=body, headers=alpha)
        assert response.status_code == 202, response.text
        assert response.json()["spec"]["augment"]["copy_paste"]["classes"] == paste.get("classes", "minority")


def test_copy_paste_without_masks_is_422_naming_the_field(api_client, alpha, new_dataset):
    body = {"dataset_id": new_dataset(alpha), "augment": {"copy_paste": {}}}
    response = api_client.post("/v1/jobs", json=body, headers=alpha)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "augment", "copy_paste"]
    assert "has none" in response.json()["detail"]


def test_copy_paste_classes_must_exist_and_have_masks(api_client, alpha):
    dataset = upload_masked(api_client, alpha)
    for classes, message in ((["2"], "not classes of this dataset"), (["0"], "have no masks")):
        body = {"dataset_id": dataset["id"], "augment": {"copy_paste": {"classes": classes}}}
        response = api_client.post("/v1/jobs", json=body, headers=alpha)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "augment", "copy_paste", "classes"]
        assert message in response.json()["detail"]
    for bad in ({"prob": 2}, {"scale": [1.2, 0.8]}, {"blend": "poisson"}, {"classes": []}):
        body = {"dataset_id": dataset["id"], "augment": {"copy_paste": bad}}
        response = api_client.post("/v1/jobs", json=body, headers=alpha)
        assert response.status_code == 422, bad
        assert response.json()["detail"].startswith("augment.copy_paste"), response.json()
