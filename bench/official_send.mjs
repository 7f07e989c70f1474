// Drive the official client's sendMessage (@tencent-weixin/openclaw-weixin) at a given
// concurrency against a responder, and print the rate as one JSON object.
//
//   node bench/official_send.mjs PACKAGE_DIR BASE_URL N IN_FLIGHT
//
// PACKAGE_DIR is the installed package (the folder holding dist/). Used by
// bench/figures/official.py; N texts are posted after a short warm-up.
import { pathToFileURL } from "node:url";
import path from "node:path";
import { randomUUID } from "node:crypto";

const [pkgDir, baseUrl, nArg, inFlightArg] = process.argv.slice(2);
const n = Number(nArg);
const inFlight = Number(inFlightArg);
const api = await import(pathToFileURL(path.join(pkgDir, "dist/src/api/api.js")).href);

function body(i) {
  return {
    msg: {
      from_user_id: "",
      to_user_id: `user${i % 10}@im.wechat`,
      client_id: randomUUID(),
      message_type: 2,
      message_state: 2,
      item_list: [{ type: 1, text_item: { text: `official ${i}` } }],
      context_token: "bench-context-token",
    },
  };
}

async function run(count) {
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      await api.sendMessage({ baseUrl, token: "bench-token", body: body(i) });
    }
  }
  const started = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return (performance.now() - started) / 1000;
}

await run(Math.min(200, n)); // warm-up: JIT, connections
const seconds = await run(n);
console.log(JSON.stringify({ texts: n, in_flight: inFlight, seconds, per_s: n / seconds }));
