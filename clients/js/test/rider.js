// Riders: clients of wsctl.js that each send one message at a time, every
// `pace` ms, until told to stop, and record every answer. Shared by the
// Node driver (ride-node.mjs) and the browser page (ride.html); the test
// that drives a deploy under them checks what they recorded.

import { connect } from "../wsctl.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function rider(url, { pace, WebSocket, stopped, onFirstAnswer }) {
  const client = connect(url, { WebSocket, backoff: { base: 100, cap: 2000 } });
  const record = { counts: [], times: [], duplicates: 0, unavailable: 0, errors: [], reconnects: 0, session: null };
  record.closeCodes = [];
  client.on("error", (detail) => {
    if (detail.code === "unavailable") record.unavailable += 1;
  });
  client.on("state", (detail) => {
    if (detail.state === "reconnecting") record.closeCodes.push(detail.code);
  });
  let n = 0;
  try {
    while (!stopped()) {
      const answer = await client.send({ n });
      record.counts.push(answer.count);
      record.times.push(Date.now());
      if (answer.duplicate) record.duplicates += 1;
      if (n === 0) onFirstAnswer();
      n += 1;
      await sleep(pace);
    }
    await client.close();
  } catch (error) {
    record.errors.push(String(error));
    await client.close();
  }
  record.reconnects = client.reconnects;
  record.session = client.sessionUuid;
  record.count = client.count;
  return record;
}

/** Runs `clients` riders until `stopped()`; resolves to their records. */
export async function ride({ url, clients, pace = 100, WebSocket, stopped, onReady = () => {} }) {
  let answered = 0;
  const onFirstAnswer = () => {
    answered += 1;
    if (answered === clients) onReady();
  };
  const riders = [];
  for (let i = 0; i < clients; i += 1) {
    riders.push(rider(url, { pace, WebSocket, stopped, onFirstAnswer }));
  }
  return Promise.all(riders);
}
