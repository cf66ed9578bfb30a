# hubforge's default deployment policy (services.governance.policies replaces it).
#
# input.action    "submit" (the requester's pre-check) or "approve" (a person deciding)
# input.request   {id, kind, stage, model, version, canary_percent, requester}
# input.actor     {name, groups, grants}: grants lists the custom scopes the actor holds
# input.evidence  {available, model_card: {present, completeness, missing, risk}, metrics, problems}
# data.hubforge.thresholds  {metric: {"min": n} or {"max": n}} from the platform config
#
# deny holds the reasons, one sentence each; allow is true when there are none.
# (Strings are joined with concat: regopy 1.5 mis-encodes sprintf("%s") of a concat.)
package hubforge.deploy

import rego.v1

default allow := false

allow if count(deny) == 0

deciding if input.action == "approve"

production if input.request.stage == "production"

grants(scope) if scope in input.actor.grants

# Who decides: staging needs an ML engineer, production an ML lead, never the requester.
deny contains "staging deployments are approved by an ML engineer (custom:deploy:staging)" if {
	deciding
	input.request.stage == "staging"
	not grants("custom:deploy:staging")
}

deny contains "production deployments are approved by an ML lead (custom:approve:production)" if {
	deciding
	production
	not grants("custom:approve:production")
}

deny contains "separation of duties: nobody approves their own request" if {
	deciding
	input.actor.name == input.request.requester
}

# What production needs: the evidence, a complete model card, metrics meeting the thresholds.
deny contains concat("", ["the model version's evidence could not be read: ", concat("; ", input.evidence.problems)]) if {
	production
	not input.evidence.available
}

deny contains sprintf("production needs a model card for %s version %s", [input.request.model, input.request.version]) if {
	production
	input.evidence.available
	not input.evidence.model_card.present
}

deny contains concat("", ["the model card is incomplete (missing: ", concat(", ", input.evidence.model_card.missing), ")"]) if {
	production
	input.evidence.model_card.present
	input.evidence.model_card.completeness < 1
}

deny contains sprintf("metric %s has a threshold but the model version's run did not log it", [name]) if {
	production
	input.evidence.available
	some name, _ in data.hubforge.thresholds
	not name in object.keys(input.evidence.metrics)
}

deny contains sprintf("metric %s is %v, below the required %v", [name, value, limit.min]) if {
	production
	some name, limit in data.hubforge.thresholds
	value := input.evidence.metrics[name]
	value < limit.min
}

deny contains sprintf("metric %s is %v, above the allowed %v", [name, value, limit.max]) if {
	production
	some name, limit in data.hubforge.thresholds
	value := input.evidence.metrics[name]
	value > limit.max
}
