// An OWT conference session over ConclaveSio, as the official JavaScript
// SDK behaves: `login` with the token and protocol 1.2, a reconnection ticket
// kept fresh with `refreshReconnectionTicket`, and after a lost connection
// a new socket and `relogin(ticket)`, keeping the participant id; the
// messages missed meanwhile arrive as ordinary events after the relogin.
(function (global) {
  'use strict';
  const Sio = global.ConclaveSio;

  function decodeBase64Json(text) {
    return JSON.parse(global.atob(text));
  }

  /** A join token: {tokenId, host, secure, signature}. */
  function decodeToken(token) {
    const t = decodeBase64Json(String(token).trim());
    if (!t || typeof t.host !== 'string' || !t.host) {
      throw new Error('Invalid token');
    }
    return t;
  }

  /** Delay before reconnection attempt n (from 0): 0.5 s, doubling, at most 5 s. */
  function backoff(n) {
    return Math.min(500 * Math.pow(2, n), 5000);
  }

  /** When to refresh a ticket that ends at notAfter (ms), as the SDK does. */
  function refreshDelay(notAfter, now) {
    const left = notAfter - now;
    if (left <= 10000) { return null; }
    return left - 60000 > 0 ? left - 60000 : left - 10000;
  }

  /**
   * States: idle, connecting, connected, reconnecting, left, dropped,
   * disconnected (could not come back), failed (login refused).
   * Events: state, participant, text, drop, error, reconnected.
   */
  class Conference {
    constructor(options) {
      options = options || {};
      this.makeSocket = options.makeSocket || function (url) { return new Sio.Socket(url); };
      this.setTimer = options.setTimer || global.setTimeout.bind(global);
      this.clearTimer = options.clearTimer || global.clearTimeout.bind(global);
      this.now = options.now || function () { return Date.now(); };
      this.sdk = options.sdk || { type: 'JavaScript', version: '5.1' };
      this.handlers = {};
      this.state = 'idle';
      this.socket = null;
      this.ticket = null;
      this.id = null;
      this.attempt = 0;
      this.holdUntil = 0;
      this.reconnectTimer = null;
      this.refreshTimer = null;
    }

    on(event, handler) {
      (this.handlers[event] = this.handlers[event] || []).push(handler);
      return this;
    }

    fire(event, args) {
      (this.handlers[event] || []).forEach(function (h) { h.apply(null, args); });
    }

    setState(state) {
      if (this.state !== state) {
        this.state = state;
        this.fire('state', [state]);
      }
    }

    /** A connected socket whose events reach this session. */
    open() {
      const self = this;
      const socket = this.makeSocket(this.url);
      ['participant', 'text', 'stream'].forEach(function (event) {
        socket.on(event, function (data) {
          if (self.socket === socket) { self.fire(event, [data]); }
        });
      });
      socket.on('drop', function (data) {
        if (self.socket !== socket) { return; }
        self.stopTimers();
        self.setState('dropped');
        self.fire('drop', [(data && data.reason) || 'dropped by the server']);
        socket.close();
      });
      socket.on('disconnect', function (reason) { self.onDisconnect(socket, reason); });
      this.socket = socket;
      return socket.connect().then(function () { return socket; });
    }

    /** Log in with a token; resolves with the login's answer. */
    join(token) {
      const self = this;
      let t;
      try {
        t = decodeToken(token);
      } catch (e) {
        this.setState('failed');
        return Promise.reject(new Error('Invalid token'));
      }
      this.url = Sio.socketUrl(t.host, t.secure);
      this.setState('connecting');
      return this.open().then(function (socket) {
        return socket.emit('login', {
          token: token,
          userAgent: { sdk: self.sdk, runtime: { name: 'conclave-sample', version: '1' } },
          protocol: '1.2',
        });
      }).then(function (ack) {
        if (ack[0] !== 'ok') {
          self.setState('failed');
          self.socket.close();
          throw new Error(String(ack[1]));
        }
        const info = ack[1];
        self.id = info.id;
        self.ticket = info.reconnectionTicket || null;
        self.scheduleRefresh();
        self.setState('connected');
        return info;
      }, function (e) {
        self.setState('failed');
        throw e;
      });
    }

    onDisconnect(socket, reason) {
      if (socket !== this.socket || this.state !== 'connected') {
        // a failed reconnection attempt is retried by reconnect() itself
        return;
      }
      this.stopRefresh();
      if (!this.ticket) {
        this.setState('disconnected');
        this.fire('error', ['Connection lost (' + reason + ')']);
        return;
      }
      this.setState('reconnecting');
      this.attempt = 0;
      this.scheduleReconnect();
    }

    scheduleReconnect() {
      const self = this;
      const wait = Math.max(backoff(this.attempt), this.holdUntil - this.now());
      this.attempt += 1;
      this.reconnectTimer = this.setTimer(function () {
        self.reconnectTimer = null;
        self.reconnect();
      }, wait);
    }

    reconnect() {
      const self = this;
      if (this.state !== 'reconnecting') { return Promise.resolve(); }
      let ticket;
      try {
        ticket = decodeBase64Json(this.ticket);
      } catch (e) {
        ticket = {};
      }
      if (ticket.notAfter && ticket.notAfter < this.now()) {
        this.setState('disconnected');
        this.fire('error', ['Reconnection ticket expired']);
        return Promise.resolve();
      }
      return this.open().then(function (socket) {
        return socket.emit('relogin', self.ticket).then(function (ack) {
          if (ack[0] !== 'ok') {
            self.setState('disconnected');
            self.fire('error', [String(ack[1])]);
            socket.close();
            return;
          }
          const data = ack[1];
          const replay = [];
          if (typeof data === 'string') {
            self.ticket = data;
          } else if (data && typeof data.ticket === 'string') {
            // protocol 1.2's documented answer: the missed messages come with it
            self.ticket = data.ticket;
            (data.messages || []).forEach(function (m) { replay.push(m); });
          }
          self.attempt = 0;
          self.setState('connected');
          self.scheduleRefresh();
          self.fire('reconnected', []);
          replay.forEach(function (m) { self.fire(m.event, [m.data]); });
        });
      }).catch(function () {
        if (self.state === 'reconnecting') { self.scheduleReconnect(); }
      });
    }

    scheduleRefresh() {
      const self = this;
      this.stopRefresh();
      if (!this.ticket) { return; }
      let notAfter;
      try {
        notAfter = decodeBase64Json(this.ticket).notAfter;
      } catch (e) {
        return;
      }
      const delay = refreshDelay(notAfter, this.now());
      if (delay === null) { return; }
      this.refreshTimer = this.setTimer(function () {
        self.refreshTimer = null;
        if (self.state !== 'connected') { return; }
        self.socket.emit('refreshReconnectionTicket').then(function (ack) {
          if (ack[0] === 'ok' && typeof ack[1] === 'string') {
            self.ticket = ack[1];
            self.scheduleRefresh();
          }
        }, function () {});
      }, delay);
    }

    stopRefresh() {
      if (this.refreshTimer) { this.clearTimer(this.refreshTimer); this.refreshTimer = null; }
    }

    stopTimers() {
      this.stopRefresh();
      if (this.reconnectTimer) { this.clearTimer(this.reconnectTimer); this.reconnectTimer = null; }
    }

    /** Text to a participant id or 'all'; rejects with the portal's error. */
    text(to, message) {
      if (this.state !== 'connected') {
        return Promise.reject(new Error('Not connected'));
      }
      return this.socket.emit('text', { to: to, message: message }).then(function (ack) {
        if (ack[0] !== 'ok') { throw new Error(String(ack[1])); }
      });
    }

    /** Leave the room for good. */
    leave() {
      this.stopTimers();
      const socket = this.socket;
      const wasIn = this.state === 'connected';
      this.setState('left');
      if (socket) {
        if (wasIn) { socket.send(Sio.encodeEvent('logout', [], undefined)); }
        socket.close();
      }
    }

    /**
     * A network blip: the WebSocket dies without a goodbye and the network
     * stays down for holdMs (for trying the page, and for its tests).
     */
    blip(holdMs) {
      this.holdUntil = this.now() + (holdMs || 0);
      if (this.socket && this.socket.ws) { this.socket.ws.close(); }
    }
  }

  global.ConclaveOwt = {
    decodeToken: decodeToken,
    backoff: backoff,
    refreshDelay: refreshDelay,
    Conference: Conference,
  };
})(typeof window !== 'undefined' ? window : this);
