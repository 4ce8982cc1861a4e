"""/v1/webhooks/secret: the caller's signing secret, and its rotation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.deps import OwnerDep, SessionDep
from api.routing import APIRouter
from api.schemas import problem_responses
from core.webhooks.owner_secrets import get_or_create_secret, rotate_secret
from core.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=problem_responses("unauthorized"))


class WebhookSecret(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "secret": "whsec_3b0c4f0e9d2a4c1b8e7f6a5d4c3b2a1f0e9d8c7b6a5f4e3d",
                    "signature_header": SIGNATURE_HEADER,
                    "timestamp_header": TIMESTAMP_HEADER,
                    "signed_content": "<timestamp>.<raw body>",
                }
            ]
        }
    )

    secret: str = Field(description="HMAC-SHA256 key of every webhook call for this owner's jobs.")
    signature_header: str = Field(default=SIGNATURE_HEADER, description="Holds 'sha256=<hex digest>'.")
    timestamp_header: str = Field(
        default=TIMESTAMP_HEADER, description="Unix seconds; part of the signature."
    )
    signed_content: str = Field(
        default="<timestamp>.<raw body>", description="What the digest is computed over (UTF-8)."
    )


@router.get("/secret", response_model=WebhookSecret)
def get_webhook_secret(principal: OwnerDep, session: SessionDep) -> WebhookSecret:
    """The secret that signs webhook calls for your jobs (created on first request).

    Verify a call by computing HMAC-SHA256(secret, timestamp + "." + body) over the raw
    body and comparing it, in constant time, with the signature header; reject
    timestamps more than five minutes away from your clock.
    """
    return WebhookSecret(secret=get_or_create_secret(session, principal.owner_id))


@router.post("/secret/rotate", response_model=WebhookSecret)
def rotate_webhook_secret(principal: OwnerDep, session: SessionDep) -> WebhookSecret:
    """Replace the secret; calls signed from now on use the new one."""
    return WebhookSecret(secret=rotate_secret(session, principal.owner_id))
