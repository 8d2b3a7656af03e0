"""moto's server with one fix to its signature check, so that every AWS call PAO makes is checked.

moto recomputes a request's SigV4 signature with the body it was sent or, when the body is empty,
with the request's parsed parameters as a body. For a GET or DELETE of a REST-JSON or REST-XML
API (EKS DescribeFargateProfile, Route 53 GetHostedZone, ...) those parameters are not empty, so
the payload hash differs and a correctly signed call is refused as SignatureDoesNotMatch. Here
a request without a body is checked as sent, with an empty payload, as AWS does.

Run: python -m pao.devstack.moto_server [moto_server's arguments].
"""

from __future__ import annotations

import sys

from botocore.awsrequest import AWSRequest
from moto.iam.access_control import IAMRequestBase
from moto.server import main

_WITHOUT_BODY = frozenset({"GET", "HEAD", "DELETE"})


def _request_as_sent(self: IAMRequestBase) -> AWSRequest:
    signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(
        ";"
    )
    headers = self._create_headers_for_aws_request(signed, self._headers)
    # A form body (the query protocol) reaches moto parsed: its parameters are the body then.
    body = self._body or (b"" if self._method in _WITHOUT_BODY else self._data)
    request = AWSRequest(method=self._method, url=self._path, data=body, headers=headers)
    request.context["timestamp"] = headers["X-Amz-Date"]
    return request


IAMRequestBase._create_aws_request = _request_as_sent  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
