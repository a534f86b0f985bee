// The signaling client against a real Switchboard: SWITCHBOARD_URL names a running node in
// development mode (open issuance), e.g. http://127.0.0.1:8080. `cargo test --test
// js_client` starts one and runs these tests; without the variable the server tests skip.
//
// Node 20 has no global WebSocket without --experimental-websocket (Node 22 and later
// have one): run `node --experimental-websocket --test test/` there.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SignalingClient } from '../src/signaling-client.js';

const BASE = process.env.SWITCHBOARD_URL;
const skip = BASE ? false : 'SWITCHBOARD_URL is not set: start Switchboard and point it there';
// Every deadline times SWITCHBOARD_TEST_PATIENCE, like the Rust tests.
const DEADLINE_MS = 10_000 * (Number(process.env.SWITCHBOARD_TEST_PATIENCE) || 1);

/** The next `type` event's detail, or a rejection naming what did not come in time. */
function next(client, type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${type}' event within ${DEADLINE_MS} ms`)), DEADLINE_MS);
    client.addEventListener(
      type,
      (e) => {
        clearTimeout(timer);
        resolve(e.detail);
      },
      { once: true },
    );
  });
}

/** A connected client for a fresh token of `user`, with `tokenOptions` for fetchToken. */
async function connected(user, options = {}, tokenOptions = undefined) {
  const grant = await SignalingClient.fetchToken(BASE, user, undefined, tokenOptions);
  assert.equal(typeof grant.token, 'string');
  const client = new SignalingClient(grant.token, { baseUrl: BASE, ...options });
  await client.connect();
  return { client, grant };
}

test('without a WebSocket implementation the client says how to get one', () => {
  assert.throws(
    () => new SignalingClient('token', { baseUrl: 'http://127.0.0.1:1', WebSocket: null }),
    (e) => e.code === 'invalid_options' && /--experimental-websocket/.test(e.message),
  );
});

test('outside a page the client asks for a base URL', () => {
  assert.throws(() => new SignalingClient('token'), (e) => e.code === 'invalid_options' && /baseUrl/.test(e.message));
});

test('two clients join a room and relay an offer, an answer and a candidate', { skip }, async () => {
  const room = `js-${process.pid}-${Date.now()}`;
  // One client with the WebSocket given explicitly, as Node code without a global one would.
  const { client: alice, grant: aliceGrant } = await connected('alice', { WebSocket: globalThis.WebSocket });
  const { client: bob, grant: bobGrant } = await connected('bob');
  try {
    const aliceJoined = next(alice, 'joined');
    alice.join(room);
    assert.deepEqual((await aliceJoined).peers, []);
    assert.equal(alice.peerId, aliceGrant.peerId);

    const bobJoined = next(bob, 'joined');
    const aliceSeesBob = next(alice, 'peer_joined');
    bob.join(room);
    assert.deepEqual((await bobJoined).peers, [aliceGrant.peerId]);
    assert.equal((await aliceSeesBob).peerId, bobGrant.peerId);

    // SDP passes byte for byte, and the sender is named by the server.
    const sdp = 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
    const offer = next(alice, 'offer');
    bob.sendOffer(aliceGrant.peerId, sdp);
    assert.deepEqual(await offer, { type: 'offer', peerId: bobGrant.peerId, sdp });

    const answer = next(bob, 'answer');
    alice.sendAnswer(bobGrant.peerId, sdp.replace('4611731400430051336', '1'));
    const answered = await answer;
    assert.equal(answered.peerId, aliceGrant.peerId);
    assert.match(answered.sdp, /o=- 1 2 IN IP4/);

    const candidate = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    const trickled = next(bob, 'ice-candidate');
    alice.sendCandidate(bobGrant.peerId, candidate);
    assert.deepEqual((await trickled).candidate, candidate);

    // A relay to someone not in the room comes back as an error naming the command.
    const refused = next(bob, 'error');
    bob.sendOffer('nobody-0', sdp);
    assert.equal((await refused).code, 'peer_not_found');
  } finally {
    const closed = [next(alice, 'close'), next(bob, 'close')];
    alice.close();
    bob.close();
    for (const detail of await Promise.all(closed)) assert.equal(detail.final, true);
  }
});

test('a refused token rejects connect with token_refused', { skip }, async () => {
  const client = new SignalingClient('not-a-token', { baseUrl: BASE, reconnect: false });
  await assert.rejects(client.connect(), (e) => e.code === 'token_refused');
});

/** A room name no other test (or earlier run against the same node) uses. */
const freshRoom = (() => {
  let n = 0;
  return () => `js-${process.pid}-${Date.now()}-${++n}`;
})();

/** Joins `client` to `room` and returns its `joined`. */
async function joinRoom(client, room) {
  const joined = next(client, 'joined');
  client.join(room);
  return joined;
}

/** Closes every client and waits for their final `close`. */
async function closeAll(...clients) {
  const closed = clients.map((c) => next(c, 'close'));
  for (const c of clients) c.close();
  await Promise.all(closed);
}

test('update reaches the others as peer_updated and shows in peers', { skip }, async () => {
  const room = freshRoom();
  const { client: alice, grant: aliceGrant } = await connected('alice');
  const { client: bob, grant: bobGrant } = await connected('bob');
  try {
    await joinRoom(alice, room);
    // Set outside a room, the metadata travels with the join.
    bob.update({ name: 'Bob' });
    const aliceSeesBob = next(alice, 'peer_joined');
    const bobJoined = await joinRoom(bob, room);
    assert.deepEqual(bobJoined.metadata, { [bobGrant.peerId]: { name: 'Bob' } });
    assert.deepEqual([...bob.peers], [[aliceGrant.peerId, null]]);
    assert.deepEqual((await aliceSeesBob).metadata, { name: 'Bob' });
    assert.deepEqual(alice.peers.get(bobGrant.peerId), { name: 'Bob' });

    const updated = next(bob, 'peer_updated');
    alice.update({ name: 'Alice', muted: true });
    assert.deepEqual(await updated, { type: 'peer_updated', peerId: aliceGrant.peerId, metadata: { name: 'Alice', muted: true } });
    assert.deepEqual(bob.peers.get(aliceGrant.peerId), { name: 'Alice', muted: true });

    // Leaving shows in the other's map; leave() empties one's own.
    const left = next(bob, 'peer_left');
    alice.leave();
    assert.equal(alice.peers.size, 0);
    assert.equal((await left).peerId, aliceGrant.peerId);
    assert.equal(bob.peers.size, 0);
  } finally {
    await closeAll(alice, bob);
  }
});

test('message reaches one member, or every other member', { skip }, async () => {
  const room = freshRoom();
  const { client: alice, grant: aliceGrant } = await connected('alice');
  const { client: bob, grant: bobGrant } = await connected('bob');
  const { client: carol } = await connected('carol');
  try {
    await joinRoom(alice, room);
    await joinRoom(bob, room);
    await joinRoom(carol, room);

    const toBob = next(bob, 'message');
    const carolsFirst = next(carol, 'message');
    alice.message({ text: 'hi' }, bobGrant.peerId);
    assert.deepEqual(await toBob, { type: 'message', from: aliceGrant.peerId, data: { text: 'hi' } });

    // Messages from one sender arrive in order, so carol's first is the one to everyone:
    // the one to bob never reached her.
    const toBobToo = next(bob, 'message');
    alice.message(['hello', 'everyone']);
    for (const got of await Promise.all([carolsFirst, toBobToo])) {
      assert.deepEqual(got, { type: 'message', from: aliceGrant.peerId, data: ['hello', 'everyone'] });
    }

    const refused = next(alice, 'error');
    alice.message('anyone?', 'nobody-0');
    assert.equal((await refused).code, 'peer_not_found');
  } finally {
    await closeAll(alice, bob, carol);
  }
});

test('metadata in the token shows in joined and peer_joined', { skip }, async () => {
  const room = freshRoom();
  const { client: alice, grant: aliceGrant } = await connected('alice', {}, { metadata: { name: 'Alice' } });
  const { client: bob, grant: bobGrant } = await connected('bob', {}, { metadata: { name: 'Bob', role: 'guest' } });
  try {
    assert.deepEqual((await joinRoom(alice, room)).metadata, { [aliceGrant.peerId]: { name: 'Alice' } });

    const aliceSeesBob = next(alice, 'peer_joined');
    const bobJoined = await joinRoom(bob, room);
    assert.deepEqual(bobJoined.metadata, {
      [aliceGrant.peerId]: { name: 'Alice' },
      [bobGrant.peerId]: { name: 'Bob', role: 'guest' },
    });
    assert.deepEqual(bob.peers.get(aliceGrant.peerId), { name: 'Alice' });
    assert.deepEqual((await aliceSeesBob).metadata, { name: 'Bob', role: 'guest' });
    assert.deepEqual(alice.peers.get(bobGrant.peerId), { name: 'Bob', role: 'guest' });
  } finally {
    await closeAll(alice, bob);
  }
});

test('fetchToken refuses metadata that is not an object', { skip }, async () => {
  await assert.rejects(
    SignalingClient.fetchToken(BASE, 'alice', undefined, { metadata: ['not', 'an', 'object'] }),
    (e) => e.code === 'invalid_request' && e.status === 400,
  );
});

/**
 * A scripted stand-in for the server's side of a WebSocket: it opens at once, records what
 * the client sends, and lets a test deliver messages or drop the connection.
 */
class FakeSocket {
  static all = [];
  /** What a new connection says first, as the server does for a resumed session. */
  static greeting = null;
  readyState = 0;
  sent = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    FakeSocket.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      if (FakeSocket.greeting) this.deliver(FakeSocket.greeting);
      this.onopen?.({});
    });
  }
  send(text) {
    const msg = JSON.parse(text);
    this.sent.push(msg);
    // The server answers a ping; on a fresh session that is the first thing it says.
    if (msg.type === 'ping') this.deliver({ type: 'pong' });
  }
  deliver(msg) {
    queueMicrotask(() => this.onmessage?.({ data: JSON.stringify(msg) }));
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
  close(code, reason) {
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }));
  }
  /** The types of what the client sent. */
  get types() {
    return this.sent.map((m) => m.type);
  }
}

test('update and message refuse what the server would', () => {
  const client = new SignalingClient('token', { baseUrl: 'http://127.0.0.1:1', WebSocket: FakeSocket });
  for (const bad of [null, 'Ann', ['Ann'], new Date(0)]) {
    assert.throws(() => client.update(bad), (e) => e.code === 'invalid_options', String(bad));
  }
  assert.throws(() => client.update({ big: 1n }), (e) => e.code === 'invalid_options');
  assert.throws(() => client.message(undefined), (e) => e.code === 'invalid_options');
});

test('a lost session gets the metadata back before the rejoin, and removed ends the rejoining', async () => {
  FakeSocket.all = [];
  FakeSocket.greeting = null;
  const client = new SignalingClient('token', { baseUrl: 'http://127.0.0.1:1', WebSocket: FakeSocket });
  // Made before connecting: it goes out once the socket opens.
  client.update({ name: 'Ann' });
  await client.connect();
  const first = FakeSocket.all[0];
  client.join('r1');
  assert.deepEqual(first.types, ['update', 'join']);
  assert.deepEqual(first.sent[0].metadata, { name: 'Ann' });

  const joined = next(client, 'joined');
  first.deliver({
    type: 'joined',
    roomId: 'r1',
    peerId: 'ann-1',
    peers: ['bob-1', 'cat-1'],
    metadata: { 'ann-1': { name: 'Ann' }, 'bob-1': { name: 'Bob' } },
  });
  await joined;
  assert.deepEqual([...client.peers], [['bob-1', { name: 'Bob' }], ['cat-1', null]]);

  // The server restarted: a fresh session answers the ping, so the client restores its
  // metadata, then joins again.
  let reconnected = next(client, 'reconnected');
  first.drop();
  assert.deepEqual(await reconnected, { resumed: false });
  const second = FakeSocket.all[1];
  assert.deepEqual(second.types, ['ping', 'update', 'join']);
  assert.deepEqual(second.sent[1].metadata, { name: 'Ann' });
  assert.equal(client.peers.size, 0, 'the old membership is gone until joined says otherwise');

  // The backend changed this client's metadata: that is what a later restore sends.
  const updated = next(client, 'peer_updated');
  second.deliver({ type: 'peer_updated', peerId: 'ann-1', metadata: { name: 'Ann', muted: true } });
  await updated;
  const removed = next(client, 'removed');
  second.deliver({ type: 'removed', roomId: 'r1' });
  assert.deepEqual(await removed, { type: 'removed', roomId: 'r1' });
  assert.equal(client.roomId, null);

  // Removed from the room: the next lost session restores the metadata but does not rejoin.
  reconnected = next(client, 'reconnected');
  second.drop();
  await reconnected;
  const third = FakeSocket.all[2];
  assert.deepEqual(third.types, ['ping', 'update']);
  assert.deepEqual(third.sent[1].metadata, { name: 'Ann', muted: true });

  await closeAll(client);
});

test('a resumed session sends nothing again, except an update made while disconnected', async () => {
  FakeSocket.all = [];
  FakeSocket.greeting = null;
  const client = new SignalingClient('token', { baseUrl: 'http://127.0.0.1:1', WebSocket: FakeSocket });
  await client.connect();
  client.update({ name: 'Ann' });
  client.join('r1');
  const joined = next(client, 'joined');
  FakeSocket.all[0].deliver({ type: 'joined', roomId: 'r1', peerId: 'ann-1', peers: [], metadata: { 'ann-1': { name: 'Ann' } } });
  await joined;

  // From now on every new connection resumes the session.
  FakeSocket.greeting = { type: 'resumed', roomId: 'r1', peerId: 'ann-1', peers: ['bob-1'], metadata: { 'bob-1': { name: 'Bob' } } };
  let reconnected = next(client, 'reconnected');
  FakeSocket.all[0].drop();
  assert.deepEqual(await reconnected, { resumed: true });
  assert.deepEqual(FakeSocket.all[1].types, ['ping']);
  assert.deepEqual([...client.peers], [['bob-1', { name: 'Bob' }]]);

  // Made while disconnected, an update goes out once the session is back.
  const reconnecting = next(client, 'reconnecting');
  reconnected = next(client, 'reconnected');
  FakeSocket.all[1].drop();
  await reconnecting;
  client.update({ name: 'Ann', away: true });
  await reconnected;
  assert.deepEqual(FakeSocket.all[2].types, ['ping', 'update']);
  assert.deepEqual(FakeSocket.all[2].sent[1].metadata, { name: 'Ann', away: true });

  // room_closed ends the membership as removed does.
  const closedRoom = next(client, 'room_closed');
  FakeSocket.all[2].deliver({ type: 'room_closed', roomId: 'r1' });
  await closedRoom;
  assert.equal(client.roomId, null);
  assert.equal(client.peers.size, 0);

  await closeAll(client);
});
