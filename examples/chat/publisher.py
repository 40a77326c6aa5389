"""Server-side events for the chat demo: what a web application does when it pushes.

It connects to the STOMP broker the browsers are subscribed through (Orbited's
built-in one here; RabbitMQ or ActiveMQ in production), and sends JSON events
to /topic/server.  This is the Python form of the Rails plugin's
``Orbited.send_data(channel, data)``: the application talks STOMP, the browsers
listen through Orbited, and Orbited never needs to know the application.

    python publisher.py --port 61613 --every 5          # a clock tick every 5 s
    python publisher.py --port 61613 --say "deploy done" # one event, then exit
"""

from __future__ import annotations

import argparse
import json
import time

import stomp

TOPIC = "/topic/server"


def event(text: str) -> str:
    return json.dumps({"text": text, "sent": time.strftime("%H:%M:%S")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=61613)
    parser.add_argument("--login", default="guest")
    parser.add_argument("--passcode", default="guest")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between clock events")
    parser.add_argument("--say", help="send this one event and exit")
    args = parser.parse_args()

    conn = stomp.Connection([(args.host, args.port)], heartbeats=(0, 0))
    try:
        conn.connect(args.login, args.passcode, wait=True)
    except stomp.exception.ConnectFailedException:
        # a sentence, not a traceback: the usual cause is that the demo is not running
        raise SystemExit(f"publisher.py: no STOMP broker at {args.host}:{args.port} "
                         "(is examples/chat/run.sh running, and is --port its STOMP_PORT?)") from None
    try:
        if args.say is not None:
            conn.send(destination=TOPIC, body=event(args.say), content_type="application/json")
            return
        count = 0
        while True:
            count += 1
            conn.send(destination=TOPIC, body=event(f"server tick #{count}"), content_type="application/json")
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    finally:
        conn.disconnect()


if __name__ == "__main__":
    main()
