// Evaluate IAM requests offline with @cloud-copilot/iam-simulate (tests/support/iam_policy_simulator.py drives it).
// stdin: JSON list of {id, identityPolicies, resourcePolicy, principal, action, resource, resourceAccount, context}
// stdout: JSON {id: "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "error: <message>"}
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const results = {}
for (const c of cases) {
  const response = await runSimulation(
    {
      identityPolicies: c.identityPolicies.map((policy, index) => ({ name: `policy${index}`, policy })),
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: c.resourcePolicy ?? undefined,
      request: {
        principal: c.principal,
        action: c.action,
        resource: { resource: c.resource, accountId: c.resourceAccount },
        contextVariables: c.context ?? {},
      },
    },
    {},
  )
  results[c.id] =
    response.resultType === 'error'
      ? `error: ${JSON.stringify(response.errors)}`
      : response.overallResult
}
process.stdout.write(JSON.stringify(results))
