"""The web UI in a real browser: headless Chromium from Debian's packages,
driven by Selenium. Logs in, sees a queue appear and its count rise while
pika publishes, purges it from its page, asks the route explainer, and
draws the topology, taking a screenshot of each page (into SCREENSHOT_DIR,
a temporary directory unless set). Warren's UI only: against another
broker it says it skips. Needs MANAGEMENT_URL (run.sh sets it)."""
import os
import sys
import tempfile

import pika
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from management_api import URL as url, is_warren  # noqa: E402

if not url:
    print("skip: MANAGEMENT_URL unset")
    sys.exit(0)
if not is_warren():
    print("skip: not Warren's UI")
    sys.exit(0)

shots = os.environ.get("SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="warren-ui-")
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]:
    options.add_argument(flag)
# The driver from Debian's chromium-driver: Selenium must not look for one
# on the network.
os.environ["SE_OFFLINE"] = "true"
browser = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
wait = WebDriverWait(browser, 20)

conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
ch = conn.channel()
ch.confirm_delivery()
queue = "ui-test-%d" % os.getpid()
exchange = "ui-test-x-%d" % os.getpid()
lost, unrouted, dead = ("ui-test-%s-%d" % (what, os.getpid()) for what in ["lost", "unrouted", "dead"])
ch.queue_declare(queue, arguments={"x-dead-letter-exchange": lost})


def publish(n):
    for i in range(n):
        ch.basic_publish("", queue, b"m%d" % i)


def text_is(locator, expected):
    return lambda driver: driver.find_element(*locator).text == expected


try:
    # Log in.
    browser.get(url + "/")
    wait.until(ready.presence_of_element_located((By.ID, "username"))).send_keys("guest")
    browser.find_element(By.ID, "password").send_keys("guest")
    browser.find_element(By.ID, "login-button").click()
    wait.until(ready.presence_of_element_located((By.ID, "nav-queues")))

    # The queue appears, and its count rises while pika publishes.
    publish(3)
    browser.find_element(By.ID, "nav-queues").click()
    row = (By.XPATH, "//a[@data-queue='%s']/ancestor::tr//span[@class='total']" % queue)
    wait.until(text_is(row, "3"))
    publish(4)
    wait.until(text_is(row, "7"))
    browser.save_screenshot(os.path.join(shots, "queues.png"))

    # Its page; purge it there.
    browser.find_element(By.XPATH, "//a[@data-queue='%s']" % queue).click()
    wait.until(text_is((By.ID, "queue-messages"), "7"))
    browser.find_element(By.ID, "purge").click()
    wait.until(ready.alert_is_present()).accept()
    wait.until(text_is((By.ID, "queue-messages"), "0"))
    browser.save_screenshot(os.path.join(shots, "queue.png"))

    # The route explainer.
    ch.exchange_declare(lost, "fanout")
    ch.queue_declare(unrouted)
    ch.queue_bind(unrouted, lost)
    ch.exchange_declare(exchange, "topic", arguments={"alternate-exchange": lost})
    ch.queue_bind(queue, exchange, "orders.*")
    browser.get(url + "/#/explain")
    wait.until(ready.presence_of_element_located((By.ID, "explain-exchange"))).send_keys(exchange)
    browser.find_element(By.ID, "explain-key").send_keys("orders.new")
    browser.find_element(By.ID, "explain-button").click()
    reached = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#explanation li.reached")))
    assert queue in reached.text and exchange in reached.text, reached.text
    assert "matched 'orders.*'" in browser.find_element(By.ID, "explanation").text
    browser.save_screenshot(os.path.join(shots, "explain.png"))

    # The topology: the exchange, the queue, the binding between them.
    browser.get(url + "/#/topology")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "g[data-node='q:%s']" % queue)))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "g[data-node='x:%s']" % exchange)))
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "g.edge text")]
    assert any(label.startswith("orders.*") for label in labels), labels
    # The alternate exchange (dashed) and the dead-letter route (dotted).
    assert browser.find_elements(By.CSS_SELECTOR, "g.edge path.alternate")
    assert browser.find_elements(By.CSS_SELECTOR, "g.edge path.dead")

    # The overview, with its charts, while pika publishes and a consumer
    # takes messages for 8 s (paced: a burst every quarter second, so that
    # the charts have a few points of steady rates).
    browser.get(url + "/#/")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#rates-chart canvas")))
    taker = conn.channel()
    taker.basic_qos(prefetch_count=100)
    taker.basic_consume(unrouted, lambda c, m, p, b: c.basic_ack(m.delivery_tag))
    for burst in range(32):
        for i in range(40):
            ch.basic_publish(exchange, "invoices.%d" % i, b"x" * 100)
        publish(5)
        conn.sleep(0.25)
    wait.until(lambda driver: int(driver.find_element(By.ID, "total-messages").text or 0) >= 160)
    browser.save_screenshot(os.path.join(shots, "overview.png"))

    # The topology's edges show the rates of what takes them: unmatched
    # keys through the alternate exchange, while pika goes on publishing.
    browser.get(url + "/#/topology")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "g[data-node='q:%s']" % queue)))

    def alternate_rate_shown(driver):
        for i in range(40):
            ch.basic_publish(exchange, "invoices.%d" % i, b"x" * 100)
        publish(5)
        conn.sleep(0.25)
        labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "g.edge text")]
        return any(label.startswith("alternate · ") and not label.endswith(" 0.0/s") for label in labels)
    wait.until(alternate_rate_shown)
    browser.save_screenshot(os.path.join(shots, "topology.png"))
finally:
    browser.quit()
    for q in [queue, unrouted]:
        ch.queue_delete(q)
    for x in [exchange, lost]:
        ch.exchange_delete(x)
    conn.close()
print("ok: screenshots in " + shots)
