"""A Socket.IO client driven by JSON lines on stdin, for Conclave's tests.

Runs with python-socketio 5.x (Engine.IO 4) or 4.x (Engine.IO 3): the same
script, the installed library decides the protocol. Each command line gets one
JSON answer line. Commands:
  {"cmd": "connect", "url": ..., "transports": ["websocket"]}
  {"cmd": "emit", "event": ..., "args": [...], "timeout": 10}   -> {"ack": [...]}
  {"cmd": "emit_noack", "event": ..., "args": [...]}
  {"cmd": "wait_event", "event": ..., "timeout": 5}              -> {"event": ..., "data": ...}
  {"cmd": "events"}                                              -> {"events": [...]}
  {"cmd": "state"}                                               -> {"connected": bool, "sid": ...}
  {"cmd": "cut"}   close the transport without a Socket.IO disconnect
  {"cmd": "disconnect"}
  {"cmd": "quit"}
"""
import json
import sys
import threading
import time

import socketio

EVENTS = [
    "participant", "text", "stream", "progress", "drop", "session-progress",
    "user_join", "user_leave", "custom_message", "add_stream", "remove_stream",
]

lock = threading.Condition()
received = []
disconnects = []

sio = socketio.Client(reconnection=False)


def make_handler(name):
    def handler(*args):
        data = args[0] if len(args) == 1 else (list(args) if args else None)
        with lock:
            received.append({"event": name, "data": data})
            lock.notify_all()
    return handler


for name in EVENTS:
    sio.on(name, make_handler(name))


@sio.event
def disconnect(*_args):
    with lock:
        disconnects.append(time.time())
        lock.notify_all()


def answer(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def emit(cmd):
    done = threading.Event()
    result = {}

    def callback(*args):
        result["ack"] = list(args)
        done.set()

    args = cmd.get("args", [])
    if len(args) == 0:
        sio.emit(cmd["event"], callback=callback)
    elif len(args) == 1:
        sio.emit(cmd["event"], args[0], callback=callback)
    else:
        sio.emit(cmd["event"], tuple(args), callback=callback)
    if done.wait(cmd.get("timeout", 10)):
        return {"ack": result["ack"]}
    return {"timeout": True}


def wait_event(cmd):
    deadline = time.time() + cmd.get("timeout", 5)
    with lock:
        while True:
            for i, e in enumerate(received):
                if e["event"] == cmd["event"]:
                    received.pop(i)
                    return e
            left = deadline - time.time()
            if left <= 0:
                return {"timeout": True}
            lock.wait(left)


def wait_disconnect(cmd):
    deadline = time.time() + cmd.get("timeout", 5)
    with lock:
        while not disconnects:
            left = deadline - time.time()
            if left <= 0:
                return {"timeout": True}
            lock.wait(left)
    return {"disconnected": True}


def cut():
    eio = sio.eio
    ws = getattr(eio, "ws", None)
    if ws is not None:
        try:
            ws.sock.shutdown(2) if getattr(ws, "sock", None) is not None else None
        except Exception:
            pass
        try:
            ws.close()
        except Exception:
            pass
    return {"ok": True}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            c = cmd["cmd"]
            if c == "connect":
                sio.connect(cmd["url"], transports=cmd.get("transports", ["websocket"]))
                answer({"ok": True, "sid": sio.sid, "transport": sio.transport()})
            elif c == "emit":
                answer(emit(cmd))
            elif c == "emit_noack":
                args = cmd.get("args", [])
                if len(args) == 1:
                    sio.emit(cmd["event"], args[0])
                else:
                    sio.emit(cmd["event"], tuple(args))
                answer({"ok": True})
            elif c == "wait_event":
                answer(wait_event(cmd))
            elif c == "wait_disconnect":
                answer(wait_disconnect(cmd))
            elif c == "events":
                with lock:
                    out = list(received)
                    received.clear()
                answer({"events": out})
            elif c == "state":
                answer({"connected": sio.connected, "sid": getattr(sio, "sid", None)})
            elif c == "cut":
                answer(cut())
            elif c == "disconnect":
                sio.disconnect()
                answer({"ok": True})
            elif c == "quit":
                answer({"ok": True})
                break
            else:
                answer({"error": "unknown command " + c})
        except Exception as e:  # report, keep serving
            answer({"error": "%s: %s" % (type(e).__name__, e)})
    try:
        sio.disconnect()
    except Exception:
        pass


if __name__ == "__main__":
    main()
