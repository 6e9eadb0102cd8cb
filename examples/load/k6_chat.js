// k6 script: a constant arrival rate of chat completions, with pass/fail thresholds.
//   k6 run examples/load/k6_chat.js
//   k6 run -e BASE_URL=http://127.0.0.1:8000 -e RATE=100 -e DURATION=2m examples/load/k6_chat.js
// An open-loop executor keeps sending at RATE requests per second however slow the server
// gets, so queues build up the way they do in production (closed-loop tools slow down instead).
import http from "k6/http";
import { check } from "k6";

const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:8000";
const MODEL = __ENV.MODEL || "llmsim/sim-model";

export const options = {
  scenarios: {
    chat: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 20),
      timeUnit: "1s",
      duration: __ENV.DURATION || "30s",
      preAllocatedVUs: 50,
      maxVUs: 500,
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.01"],
    http_req_duration: ["p(95)<5000"],
  },
};

const body = JSON.stringify({
  model: MODEL,
  messages: [{ role: "user", content: "Hello!" }],
  max_tokens: Number(__ENV.MAX_TOKENS || 32),
});
const params = { headers: { "Content-Type": "application/json" } };

export default function () {
  const response = http.post(`${BASE_URL}/v1/chat/completions`, body, params);
  check(response, {
    "status is 200": (r) => r.status === 200,
    "has a choice": (r) => r.status !== 200 || r.json("choices.0.message.content") !== undefined,
  });
}
