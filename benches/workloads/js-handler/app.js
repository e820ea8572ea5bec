// The JavaScript HTTP handler: a `wasi:http/proxy` component made by componentize-js
// (StarlingMonkey, SpiderMonkey in wasm, about 13 MiB), written as a service worker's fetch
// handler.
//
// - Any path but `/echo` gets a short text.
// - `/echo` (the end-to-end tests) streams the request body back, with the path and query in
//   `x-path`, the request's `x-test` header back as `x-echo`, and `x-served` counting the
//   requests this instance has seen (always 1: every request gets a fresh instance).

let served = 0;

addEventListener("fetch", (event) => {
  served += 1;
  const request = event.request;
  const url = new URL(request.url);
  console.log(`js handler: ${request.method} ${url.pathname}`);
  if (url.pathname !== "/echo") {
    event.respondWith(
      new Response("hello from javascript\n", { headers: { "content-type": "text/plain" } }),
    );
    return;
  }
  const headers = new Headers({
    "content-type": "application/octet-stream",
    "x-path": url.pathname + url.search,
    "x-served": String(served),
  });
  const echo = request.headers.get("x-test");
  if (echo !== null) {
    headers.set("x-echo", echo);
  }
  event.respondWith(new Response(request.body, { headers }));
});
