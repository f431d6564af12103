"""``DELETE /generate/{id}``: the owner deletes a finished job, its uploaded audio and its
video; a queued or running job must be cancelled first."""

from __future__ import annotations

import pytest
from django.utils import timezone

from avatars.models import GenerationJob
from avatars.services import job_delete
from musetalk_site.errors import ApplicationError
from tests.avatars.job_files import files_of, job_with_files

pytestmark = pytest.mark.django_db

Status = GenerationJob.Status


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
def test_the_owner_deletes_a_finished_job_with_its_files(api, status):
    job = job_with_files(api.user, status, finished_at=timezone.now())
    response = api.delete(f"/generate/{job.request_id}")
    assert response.status_code == 204
    assert not GenerationJob.objects.filter(pk=job.pk).exists()
    assert not any(path.exists() for path in files_of(job))
    assert api.get(f"/generate/{job.request_id}/status").status_code == 404


def test_another_users_job_is_not_found_and_stays(api, other_api):
    job = job_with_files(api.user, Status.SUCCEEDED)
    response = other_api.delete(f"/generate/{job.request_id}")
    assert response.status_code == 404
    assert response.json() == {"message": f"Request {job.request_id!r} not found.", "extra": {}}
    assert GenerationJob.objects.filter(pk=job.pk).exists()
    assert all(path.exists() for path in files_of(job))


def test_a_missing_job_is_not_found(api):
    assert api.delete("/generate/req_missing").status_code == 404


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING])
def test_a_queued_or_running_job_answers_409_and_stays(api, status):
    job = job_with_files(api.user, status)
    response = api.delete(f"/generate/{job.request_id}")
    assert response.status_code == 409
    assert response.json() == {
        "message": f"Job {job.request_id} is {status}; cancel it first, then delete it.",
        "extra": {"request_id": job.request_id, "status": status},
    }
    assert GenerationJob.objects.filter(pk=job.pk, status=status).exists()
    assert all(path.exists() for path in files_of(job))


def test_a_cancelled_queued_job_can_then_be_deleted(api, redis_server):
    job = job_with_files(api.user, Status.QUEUED)
    assert api.post(f"/generate/{job.request_id}/cancel").status_code == 200
    assert api.delete(f"/generate/{job.request_id}").status_code == 204
    assert not GenerationJob.objects.filter(pk=job.pk).exists()


def test_a_job_whose_files_are_gone_is_still_deleted(api):
    job = job_with_files(api.user, Status.SUCCEEDED)
    for path in files_of(job):
        path.unlink()
    job_delete(job=job)
    assert not GenerationJob.objects.filter(pk=job.pk).exists()


def test_the_service_refuses_an_unfinished_job(api):
    job = job_with_files(api.user, Status.RUNNING)
    with pytest.raises(ApplicationError) as refused:
        job_delete(job=job)
    assert refused.value.status_code == 409


def test_the_schema_documents_the_delete_and_its_errors(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/generate/{request_id}"]["delete"]
    assert set(operation["responses"]) >= {"204", "401", "403", "404", "409"}
    assert "cancel it first" in operation["responses"]["409"]["description"]
