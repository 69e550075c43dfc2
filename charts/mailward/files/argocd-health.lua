-- Argo CD health for mailward's kinds (MailDomain, MailServer, DNSProvider, ClusterDNSProvider).
-- The same reading of the status as kstatus (Flux, kubectl wait): the generation observed, then
-- Stalled, Reconciling and Ready. Install it under resource.customizations.health.mailward.io_<Kind>
-- in argocd-cm (see docs/gitops.md, or the chart's argocd.healthCheckConfigMap value).
local health = { status = "Progressing", message = "waiting for mailward to report" }

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, found in ipairs(obj.status.conditions) do
    if found.type == kind then
      return found
    end
  end
  return nil
end

local function said(found)
  local text = found.reason or ""
  if found.message ~= nil and found.message ~= "" then
    text = text .. ": " .. found.message
  end
  return text
end

if obj.metadata.deletionTimestamp ~= nil then
  health.message = "being deleted"
  return health
end
if obj.status == nil or obj.status.observedGeneration == nil then
  return health
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  health.message = "generation " .. obj.metadata.generation .. " not yet reconciled"
  return health
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = said(stalled)
  return health
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  health.message = said(reconciling)
  return health
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  health.status = "Healthy"
  health.message = said(ready)
  return health
end
if ready ~= nil then
  health.message = said(ready)
end
return health
