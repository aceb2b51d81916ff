// Unit tests of sio.js and owt.js, run in the browser (tests.html): a fake
// WebSocket plays the server, a manual clock plays the timers.
(function () {
  'use strict';
  const Sio = window.ConclaveSio;
  const Owt = window.ConclaveOwt;
  const tests = [];
  function test(name, fn) { tests.push({ name: name, fn: fn }); }
  function eq(actual, expected, what) {
    const a = JSON.stringify(actual), e = JSON.stringify(expected);
    if (a !== e) { throw new Error((what || 'value') + ': expected ' + e + ', got ' + a); }
  }
  function throws(fn, what) {
    try { fn(); } catch (e) { return; }
    throw new Error(what + ' should have thrown');
  }
  const flush = function () { return new Promise(function (r) { setTimeout(r, 0); }); };

  /** Timers that run only when the test says. */
  function Clock() {
    this.t = 1000000;
    this.timers = [];
    this.next = 1;
  }
  Clock.prototype.set = function (fn, ms) {
    const id = this.next++;
    this.timers.push({ id: id, at: this.t + ms, fn: fn });
    return id;
  };
  Clock.prototype.clear = function (id) {
    this.timers = this.timers.filter(function (t) { return t.id !== id; });
  };
  Clock.prototype.advance = function (ms) {
    this.t += ms;
    const due = this.timers.filter(function (t) { return t.at <= this.t; }, this);
    this.timers = this.timers.filter(function (t) { return t.at > this.t; }, this);
    due.forEach(function (t) { t.fn(); });
  };

  /** A WebSocket whose server side is the test. */
  const sockets = [];
  function FakeWebSocket(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    this.closedByClient = false;
    sockets.push(this);
  }
  FakeWebSocket.prototype.send = function (frame) { this.sent.push(frame); };
  FakeWebSocket.prototype.close = function () {
    if (this.readyState === 3) { return; }
    this.readyState = 3;
    this.closedByClient = true;
    const self = this;
    setTimeout(function () { if (self.onclose) { self.onclose({}); } }, 0);
  };
  FakeWebSocket.prototype.serverSends = function (frame) { this.onmessage({ data: frame }); };
  FakeWebSocket.prototype.serverCloses = function () {
    this.readyState = 3;
    if (this.onclose) { this.onclose({}); }
  };
  /** The server's side of the handshake: open, then the namespace CONNECT. */
  FakeWebSocket.prototype.accept = function (sid) {
    this.serverSends('0{"sid":"e' + sid + '","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}');
    eq(this.sent[this.sent.length - 1], '40', 'namespace CONNECT');
    this.serverSends('40{"sid":"' + sid + '"}');
  };
  /** Answer the last event the client emitted, with its ack id. */
  FakeWebSocket.prototype.answerLast = function (args) {
    const last = this.sent[this.sent.length - 1];
    const packet = Sio.decode(last);
    this.serverSends(Sio.encodeAck(packet.sio.id, args));
    return packet.sio.data;
  };

  test('events encode with and without ack ids', function () {
    eq(Sio.encodeEvent('text', [{ to: 'all', message: 'hi' }], 7), '427["text",{"to":"all","message":"hi"}]');
    eq(Sio.encodeEvent('logout', [], undefined), '42["logout"]');
    eq(Sio.encodeAck(12, ['ok', { id: 'x' }]), '4312["ok",{"id":"x"}]');
    eq(Sio.socketUrl('localhost:8080', false), 'ws://localhost:8080/socket.io/?EIO=4&transport=websocket');
    eq(Sio.socketUrl('conf.example.com', true), 'wss://conf.example.com/socket.io/?EIO=4&transport=websocket');
  });

  test('frames decode: Engine.IO packets, events, acks, namespaces', function () {
    eq(Sio.decode('2'), { eio: '2', data: '' });
    eq(Sio.decode('0{"sid":"a"}').data, '{"sid":"a"}');
    eq(Sio.decode('42["participant",{"action":"leave","data":"p1"}]').sio,
      { type: '2', nsp: '/', id: undefined, data: ['participant', { action: 'leave', data: 'p1' }] });
    eq(Sio.decode('4315["ok"]').sio, { type: '3', nsp: '/', id: 15, data: ['ok'] });
    eq(Sio.decode('42/admin,3["x"]').sio, { type: '2', nsp: '/admin', id: 3, data: ['x'] });
    eq(Sio.decode('40{"sid":"s1"}').sio.data, { sid: 's1' });
    eq(Sio.decode('41').sio.data, undefined);
  });

  test('malformed frames are refused', function () {
    throws(function () { Sio.decode(''); }, 'an empty frame');
    throws(function () { Sio.decode('49[]'); }, 'an unknown type');
    throws(function () { Sio.decode('42{"not":"an array"}'); }, 'an event that is not an array');
    throws(function () { Sio.decode('42[unterminated'); }, 'bad JSON');
  });

  test('a socket connects, answers pings, matches acks and acks server events', async function () {
    const clock = new Clock();
    const s = new Sio.Socket('ws://x', { WebSocketImpl: FakeWebSocket, setTimer: clock.set.bind(clock), clearTimer: clock.clear.bind(clock) });
    const connected = s.connect();
    const ws = sockets[sockets.length - 1];
    ws.accept('sid-1');
    eq(await connected, 'sid-1');
    ws.serverSends('2');
    eq(ws.sent[ws.sent.length - 1], '3', 'pong');
    const answer = s.emit('login', { token: 't' });
    eq(ws.answerLast(['ok', { id: 'p1' }]), ['login', { token: 't' }]);
    eq(await answer, ['ok', { id: 'p1' }]);
    let got = null;
    s.on('ping-me', function (data, ack) { got = data; ack('pong', 1); });
    ws.serverSends('429["ping-me",{"n":1}]');
    eq(got, { n: 1 });
    eq(ws.sent[ws.sent.length - 1], '439["pong",1]');
    // a garbage frame is ignored, the socket lives on
    ws.serverSends('4x');
    eq(s.closed, false);
  });

  test('a socket that hears no ping for pingInterval + pingTimeout is lost', async function () {
    const clock = new Clock();
    const s = new Sio.Socket('ws://x', { WebSocketImpl: FakeWebSocket, setTimer: clock.set.bind(clock), clearTimer: clock.clear.bind(clock) });
    const reasons = [];
    s.on('disconnect', function (r) { reasons.push(r); });
    const connected = s.connect();
    sockets[sockets.length - 1].accept('sid-2');
    await connected;
    clock.advance(44999);
    eq(reasons, []);
    clock.advance(1);
    eq(reasons, ['ping timeout']);
    // pending acks fail at once, later emits are refused
    let refused = false;
    await s.emit('text', {}).catch(function () { refused = true; });
    eq(refused, true, 'emit after loss');
  });

  test('backoff and ticket refresh follow the SDK', function () {
    eq([0, 1, 2, 3, 4, 10].map(Owt.backoff), [500, 1000, 2000, 4000, 5000, 5000]);
    eq(Owt.refreshDelay(1000 + 600000, 1000), 540000);
    eq(Owt.refreshDelay(1000 + 30000, 1000), 20000);
    eq(Owt.refreshDelay(1000 + 5000, 1000), null);
  });

  function token(host) { return btoa(JSON.stringify({ tokenId: 't1', host: host, secure: false, signature: 's' })); }
  function ticket(notAfter) { return btoa(JSON.stringify({ participantId: 'p1', ticketId: 'k', notBefore: 0, notAfter: notAfter, signature: 's' })); }

  async function joined(clock) {
    const conf = new Owt.Conference({
      makeSocket: function (url) {
        return new Sio.Socket(url, { WebSocketImpl: FakeWebSocket, setTimer: clock.set.bind(clock), clearTimer: clock.clear.bind(clock) });
      },
      setTimer: clock.set.bind(clock),
      clearTimer: clock.clear.bind(clock),
      now: function () { return clock.t; },
    });
    const states = [];
    conf.on('state', function (s) { states.push(s); });
    const joining = conf.join(token('portal:8080'));
    await flush();
    const ws = sockets[sockets.length - 1];
    eq(ws.url, 'ws://portal:8080/socket.io/?EIO=4&transport=websocket');
    ws.accept('p1');
    await flush();
    const login = ws.answerLast(['ok', { id: 'p1', user: 'alice', room: { id: 'r', participants: [] }, reconnectionTicket: ticket(clock.t + 600000) }]);
    eq(login[1].protocol, '1.2');
    eq(login[1].userAgent.sdk.type, 'JavaScript');
    const info = await joining;
    eq(info.id, 'p1');
    return { conf: conf, ws: ws, states: states };
  }

  test('after a blip the session relogs in with its ticket and keeps its id', async function () {
    const clock = new Clock();
    const j = await joined(clock);
    const texts = [];
    j.conf.on('text', function (t) { texts.push(t.message); });
    const held = j.conf.ticket;
    j.conf.blip(3000);
    await flush();
    eq(j.conf.state, 'reconnecting');
    const before = sockets.length;
    clock.advance(2999);
    await flush();
    eq(sockets.length, before, 'no attempt while the network is down');
    clock.advance(1);
    await flush();
    const ws2 = sockets[sockets.length - 1];
    ws2.accept('p2');
    await flush();
    const relogin = ws2.answerLast(['ok', ticket(clock.t + 600000)]);
    eq(relogin, ['relogin', held], 'relogin with the ticket held');
    ws2.serverSends('42["text",{"from":"p9","to":"all","message":"missed"}]');
    await flush();
    eq(j.conf.ticket === held, false, 'the answer is the new ticket');
    eq(j.conf.state, 'connected');
    eq(j.conf.id, 'p1');
    eq(texts, ['missed']);
  });

  test('the documented 1.2 relogin answer replays its messages', async function () {
    const clock = new Clock();
    const j = await joined(clock);
    const texts = [];
    j.conf.on('text', function (t) { texts.push(t.message); });
    j.ws.serverCloses();
    await flush();
    clock.advance(500);
    await flush();
    const ws2 = sockets[sockets.length - 1];
    ws2.accept('p3');
    await flush();
    ws2.answerLast(['ok', { ticket: ticket(clock.t + 600000), messages: [{ event: 'text', data: { from: 'p9', to: 'all', message: 'm1' }, seq: 4 }] }]);
    await flush();
    eq(texts, ['m1']);
    eq(j.conf.state, 'connected');
  });

  test('failed attempts back off, a refused relogin ends the session', async function () {
    const clock = new Clock();
    const j = await joined(clock);
    const errors = [];
    j.conf.on('error', function (e) { errors.push(e); });
    j.ws.serverCloses();
    await flush();
    clock.advance(500);
    await flush();
    sockets[sockets.length - 1].serverCloses(); // the portal is not back yet
    await flush();
    const before = sockets.length;
    clock.advance(999);
    await flush();
    eq(sockets.length, before, 'the second attempt waits 1 s');
    clock.advance(1);
    await flush();
    const ws3 = sockets[sockets.length - 1];
    ws3.accept('p4');
    await flush();
    ws3.answerLast(['error', 'Ticket has been used']);
    await flush();
    eq(j.conf.state, 'disconnected');
    eq(errors, ['Ticket has been used']);
  });

  test('drop ends the session with its reason; text while away is refused', async function () {
    const clock = new Clock();
    const j = await joined(clock);
    const drops = [];
    j.conf.on('drop', function (r) { drops.push(r); });
    j.ws.serverSends('42["drop",{"reason":"Dropped by the application"}]');
    await flush();
    eq(j.conf.state, 'dropped');
    eq(drops, ['Dropped by the application']);
    let refused = null;
    await j.conf.text('all', 'x').catch(function (e) { refused = e.message; });
    eq(refused, 'Not connected');
    const j2 = await joined(clock);
    j2.ws.serverSends('42["drop"]');
    await flush();
    eq(j2.conf.state, 'dropped');
  });

  test('leave sends logout and closes', async function () {
    const clock = new Clock();
    const j = await joined(clock);
    j.conf.leave();
    eq(j.ws.sent[j.ws.sent.length - 2], '42["logout"]');
    eq(j.ws.sent[j.ws.sent.length - 1], '41');
    await flush();
    eq(j.conf.state, 'left');
    eq(j.states, ['connecting', 'connected', 'left']);
  });

  (async function run() {
    let passed = 0, failed = 0;
    for (const t of tests) {
      const li = document.createElement('li');
      try {
        await t.fn();
        passed += 1;
        li.textContent = 'PASS ' + t.name;
        li.className = 'pass';
      } catch (e) {
        failed += 1;
        li.textContent = 'FAIL ' + t.name + ': ' + e.message;
        li.className = 'fail';
      }
      document.getElementById('results').appendChild(li);
    }
    const summary = document.getElementById('summary');
    summary.textContent = passed + ' passed, ' + failed + ' failed';
    summary.dataset.passed = String(passed);
    summary.dataset.failed = String(failed);
    summary.dataset.done = 'true';
  })();
})();
