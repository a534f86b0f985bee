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

/** A connected client for a fresh token of `user`. */
async function connected(user, options = {}) {
  const grant = await SignalingClient.fetchToken(BASE, user);
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
