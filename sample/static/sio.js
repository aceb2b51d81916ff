// A small Socket.IO client: Socket.IO protocol 5 over Engine.IO 4, WebSocket
// only, the default namespace, JSON events with acks. No bundler, nothing
// from npm. Every dependency on the browser (WebSocket, timers) can be
// replaced, so that tests.html drives it with a fake server.
(function (global) {
  'use strict';

  // Engine.IO packet types (the first character of a frame)
  const EIO_OPEN = '0', EIO_CLOSE = '1', EIO_PING = '2', EIO_PONG = '3', EIO_MESSAGE = '4';
  // Socket.IO packet types (the character after Engine.IO's "4")
  const SIO_CONNECT = '0', SIO_DISCONNECT = '1', SIO_EVENT = '2', SIO_ACK = '3', SIO_CONNECT_ERROR = '4';

  /** The WebSocket URL of a Socket.IO server at host[:port]. */
  function socketUrl(host, secure) {
    return (secure ? 'wss' : 'ws') + '://' + host + '/socket.io/?EIO=4&transport=websocket';
  }

  /** `42[name, ...args]`, with the ack id between type and data when given. */
  function encodeEvent(name, args, ackId) {
    return EIO_MESSAGE + SIO_EVENT + (ackId === undefined ? '' : String(ackId)) +
      JSON.stringify([name].concat(args));
  }

  /** `43<id>[...args]`: the answer to a server's event that asked for an ack. */
  function encodeAck(id, args) {
    return EIO_MESSAGE + SIO_ACK + String(id) + JSON.stringify(args);
  }

  /**
   * One frame: {eio, data} for Engine.IO packets, and for messages also
   * {sio: {type, nsp, id, data}}. Throws on a frame that is not valid.
   */
  function decode(frame) {
    if (typeof frame !== 'string' || frame.length === 0) {
      throw new Error('not a text frame');
    }
    const eio = frame[0];
    if (eio !== EIO_MESSAGE) {
      return { eio: eio, data: frame.slice(1) };
    }
    const type = frame[1];
    if (type === undefined || '01234'.indexOf(type) < 0) {
      throw new Error('unknown Socket.IO packet type');
    }
    let i = 2;
    let nsp = '/';
    if (frame[i] === '/') {
      const comma = frame.indexOf(',', i);
      nsp = comma < 0 ? frame.slice(i) : frame.slice(i, comma);
      i = comma < 0 ? frame.length : comma + 1;
    }
    let digits = '';
    while (i < frame.length && frame[i] >= '0' && frame[i] <= '9') {
      digits += frame[i];
      i += 1;
    }
    const rest = frame.slice(i);
    const data = rest.length ? JSON.parse(rest) : undefined;
    if ((type === SIO_EVENT || type === SIO_ACK) && !Array.isArray(data)) {
      throw new Error('event data is not an array');
    }
    return { eio: eio, sio: { type: type, nsp: nsp, id: digits ? Number(digits) : undefined, data: data } };
  }

  /**
   * A Socket.IO connection. Events: 'connect' (sid), 'disconnect' (reason),
   * and every server event by name (args..., ackFn when the server asked
   * for an ack). `emit` returns a promise of the ack's arguments.
   */
  class Socket {
    constructor(url, options) {
      options = options || {};
      this.url = url;
      this.WebSocketImpl = options.WebSocketImpl || global.WebSocket;
      this.setTimer = options.setTimer || global.setTimeout.bind(global);
      this.clearTimer = options.clearTimer || global.clearTimeout.bind(global);
      this.ackTimeout = options.ackTimeout || 20000;
      this.handlers = {};
      this.acks = new Map();
      this.nextAck = 0;
      this.sid = null;
      this.ws = null;
      this.pingTimer = null;
      this.pingLimit = 0;
      this.closed = false;
    }

    on(event, handler) {
      (this.handlers[event] = this.handlers[event] || []).push(handler);
      return this;
    }

    fire(event, args) {
      (this.handlers[event] || []).forEach(function (h) {
        try { h.apply(null, args); } catch (e) { console.error('handler of ' + event + ' failed', e); }
      });
    }

    /** Open the WebSocket and join the default namespace; resolves with the sid. */
    connect() {
      const self = this;
      return new Promise(function (resolve, reject) {
        let settled = false;
        const ws = new self.WebSocketImpl(self.url);
        self.ws = ws;
        ws.onmessage = function (e) { self.receive(e.data); };
        ws.onerror = function () {};
        ws.onclose = function () {
          if (!settled) { settled = true; reject(new Error('connection closed')); }
          self.lost('transport close');
        };
        self.on('connect', function (sid) {
          if (!settled) { settled = true; resolve(sid); }
        });
        self.on('connect_error', function (message) {
          if (!settled) { settled = true; reject(new Error(message)); }
        });
      });
    }

    send(frame) {
      if (this.ws && this.ws.readyState === 1) {
        this.ws.send(frame);
        return true;
      }
      return false;
    }

    /** No ping for pingInterval + pingTimeout: the server is gone. */
    armPing() {
      const self = this;
      if (this.pingTimer) { this.clearTimer(this.pingTimer); }
      this.pingTimer = this.setTimer(function () { self.lost('ping timeout'); }, this.pingLimit);
    }

    receive(frame) {
      let packet;
      try {
        packet = decode(frame);
      } catch (e) {
        console.warn('ignoring a malformed frame', frame, e);
        return;
      }
      if (packet.eio === EIO_OPEN) {
        const open = JSON.parse(packet.data);
        this.pingLimit = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
        this.armPing();
        this.send(EIO_MESSAGE + SIO_CONNECT);
        return;
      }
      if (packet.eio === EIO_PING) {
        this.armPing();
        this.send(EIO_PONG);
        return;
      }
      if (packet.eio === EIO_CLOSE) {
        this.lost('server close');
        return;
      }
      if (!packet.sio || packet.sio.nsp !== '/') {
        return;
      }
      const p = packet.sio;
      if (p.type === SIO_CONNECT) {
        this.sid = p.data && p.data.sid;
        this.fire('connect', [this.sid]);
      } else if (p.type === SIO_CONNECT_ERROR) {
        this.fire('connect_error', [p.data && p.data.message]);
      } else if (p.type === SIO_DISCONNECT) {
        this.lost('server namespace disconnect');
      } else if (p.type === SIO_ACK) {
        const pending = this.acks.get(p.id);
        if (pending) {
          this.acks.delete(p.id);
          this.clearTimer(pending.timer);
          pending.resolve(p.data);
        }
      } else if (p.type === SIO_EVENT) {
        const args = p.data.slice(1);
        if (p.id !== undefined) {
          const self = this, id = p.id;
          args.push(function () { self.send(encodeAck(id, Array.prototype.slice.call(arguments))); });
        }
        this.fire(String(p.data[0]), args);
      }
    }

    /** Emit with an ack; resolves with the ack's arguments. */
    emit(name) {
      const args = Array.prototype.slice.call(arguments, 1);
      const self = this;
      const id = this.nextAck++;
      return new Promise(function (resolve, reject) {
        if (!self.send(encodeEvent(name, args, id))) {
          reject(new Error('not connected'));
          return;
        }
        const timer = self.setTimer(function () {
          self.acks.delete(id);
          reject(new Error('no answer to ' + name));
        }, self.ackTimeout);
        self.acks.set(id, { resolve: resolve, timer: timer });
      });
    }

    /** The connection is gone, however it went; fires 'disconnect' once. */
    lost(reason) {
      if (this.closed) { return; }
      this.closed = true;
      if (this.pingTimer) { this.clearTimer(this.pingTimer); }
      const self = this;
      this.acks.forEach(function (pending) { self.clearTimer(pending.timer); });
      this.acks.clear();
      if (this.ws) {
        this.ws.onclose = null;
        this.ws.onmessage = null;
        try { this.ws.close(); } catch (e) { /* already closed */ }
      }
      this.fire('disconnect', [reason]);
    }

    /** Leave the namespace and close, as a client that is done. */
    close() {
      this.send(EIO_MESSAGE + SIO_DISCONNECT);
      this.lost('client close');
    }
  }

  global.ConclaveSio = {
    socketUrl: socketUrl,
    encodeEvent: encodeEvent,
    encodeAck: encodeAck,
    decode: decode,
    Socket: Socket,
  };
})(typeof window !== 'undefined' ? window : this);
