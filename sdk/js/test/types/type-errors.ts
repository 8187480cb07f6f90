// Deliberate type errors: each marked line must be reported by tsc with the code it names, and
// no other line may be (test/types.test.mjs). If the declarations stopped catching one of
// these, the package would have lost a check its users rely on.

import { Client, type Policy } from "egressd";

const client = new Client();

async function wrong(): Promise<void> {
  await client.egress.setSession({ allowHttps: true }); // error TS2561: the wire's keys are snake_case
  await client.egress.setSession({ allow_https: "yes" }); // error TS2322: a flag is a boolean
  await client.egress.setSession({ mode: "block" }); // error TS2322: "enforce" or "monitor"
  await client.egress.setSession({ allowed_domains: "api.github.com" }); // error TS2322: a list, not one string
  await client.egress.check({ url: "https://pypi.org/", port: 443 }); // error TS2345: a URL carries its port
  await client.egress.check({ dns_query: "pypi.org", method: "GET" }); // error TS2345: method goes with url only
  await client.vms.get(123); // error TS2345: IDs are strings
  const p: Policy = client.egress.getSession(); // error TS2740: a Promise, not a Policy
  for (const e of client.events.follow()) { // error TS2488: an async iterator: for await
    console.log(e);
  }
  new Client({ api_key: "k" }); // error TS2561: the client's own options are camelCase
  const ok: Policy = await client.egress.getSession();
  console.log(ok.allowHttps, p); // error TS2551: no such field
}

export { wrong };
