"""The management API against its OpenAPI description (docs/openapi.yaml),
with schemathesis: every operation, on the objects declared here first
(the description's examples name them) and on generated ones, must answer
a status the description lists, with its content type and schema, and
never a server error. Warren's API only (the description includes the
route explainer): against another broker it says it skips. Needs
MANAGEMENT_URL (run.sh sets it); run last, as it changes what it finds."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from management_api import URL as url, call, is_warren  # noqa: E402

if not url:
    print("skip: MANAGEMENT_URL unset")
    sys.exit(0)
if not is_warren():
    print("skip: not Warren's API")
    sys.exit(0)

# The examples of docs/openapi.yaml.
call("PUT", "/api/vhosts/st-vhost")
call("PUT", "/api/vhosts/st-doomed")
call("PUT", "/api/users/st-user", {"password": "st", "tags": "management"})
call("PUT", "/api/queues/st-vhost/st-q", {"durable": False})
call("PUT", "/api/exchanges/st-vhost/st-x", {"type": "direct"})
call("POST", "/api/bindings/st-vhost/e/st-x/q/st-q", {"routing_key": "k"})
call("POST", "/api/exchanges/st-vhost/st-x/publish",
     {"routing_key": "k", "payload": "hello", "payload_encoding": "string", "properties": {}})

spec = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../docs/openapi.yaml")
here = os.path.dirname(os.path.abspath(sys.executable))
command = [os.path.join(here, "schemathesis"), "run", spec, "--base-url", url, "--auth", "guest:guest",
           "--checks", "all", "--hypothesis-max-examples", "25", "--hypothesis-seed", "1",
           "--hypothesis-deadline", "5000", "--no-color"]
sys.exit(subprocess.run(command).returncode)
