"""Demo event generator: JSON page views at RATE events per second to
TOPIC on BOOTSTRAP, with event times a little out of order."""
import json
import os
import random
import time
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer

producer = Producer({"bootstrap.servers": os.environ.get("BOOTSTRAP", "localhost:9092")})
topic = os.environ.get("TOPIC", "clicks")
rate = float(os.environ.get("RATE", "200"))
pages = ["/", "/search", "/item", "/cart", "/checkout"]
while True:
    started = time.monotonic()
    for _ in range(int(rate)):
        ts = datetime.now(timezone.utc) - timedelta(milliseconds=random.randint(0, 3000))
        event = {
            "user_id": random.randint(1, 50),
            "page": random.choice(pages),
            "duration_ms": random.randint(100, 5000),
            "ts": ts.isoformat(),
        }
        producer.produce(topic, json.dumps(event).encode(), key=str(event["user_id"]).encode())
    producer.flush()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
