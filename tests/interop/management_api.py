"""The management API for the interop scripts, as guest: MANAGEMENT_URL (run.sh sets
it for the broker it starts), a JSON call, and whether the broker is Warren."""
import base64, json, os, urllib.request

URL = os.environ.get("MANAGEMENT_URL")
CREDENTIALS = "Basic " + base64.b64encode(b"guest:guest").decode()


def call(method, path, body=None):
    """The JSON answer of a request (None for an empty one); raises on an error status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method,
                                     headers={"Authorization": CREDENTIALS, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def is_warren():
    return call("GET", "/api/overview").get("product_name") == "Warren"
