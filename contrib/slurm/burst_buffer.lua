--[[
burst_buffer.lua: clusster staging for Slurm's burst_buffer/lua plugin (written for 22.05).

Install: copy to burst_buffer.lua beside slurm.conf, set BurstBufferType=burst_buffer/lua in
slurm.conf, and give this script a site config file (below). docs/staging.md has the whole story.

Job scripts ask for data with directives in their leading comment block (the lines before the
first line that is neither blank nor a comment, as for #SBATCH):

  #CLUSSTER stage_in  NS/NAME[@TAG|@VERSION-ID] DEST
  #CLUSSTER stage_out SRC NS/NAME [--tag T] [--rule "2 copies on tier=hpc"]

Slurm hands a job to this plugin only if its script has a line starting with the plugin's
directive, `#BB_LUA` unless burst_buffer.conf says otherwise. So either the site sets
`Directive=CLUSSTER` in burst_buffer.conf (the #CLUSSTER lines are then the plugin's own
directives), or each job adds the marker line `#BB_LUA clusster`. The directives are also
accepted behind #BB_LUA: `#BB_LUA clusster stage_in NS/NAME DEST` (or without "clusster").
A job whose only directives are #CLUSSTER lines, on a cluster without Directive=CLUSSTER, never
reaches this script: its directives are ignored (the prolog route has no such trap).

Words are split at blanks; '...' and "..." quote (nothing is special inside them), a backslash
outside quotes takes the next character literally. Then in every word $NAME and ${NAME} are
replaced ($$ is a $). The names known:
  SLURM_JOB_ID, SLURM_JOB_UID, SLURM_JOB_GID, SLURM_JOB_USER, USER, HOME (the job user's
  passwd entry), SLURM_JOB_WORK_DIR (the job's working directory);
  the site config's env.NAME entries (e.g. env.SCRATCH = /scratch/$USER);
  then any variable of the environment the job was submitted with (sbatch --export, stored
  by slurmctld), e.g. SCRATCH exported by the user's login shell.
An unknown name is an error at submission. A relative DEST or SRC is taken from the job's
working directory.

What runs when (all as root in slurmctld's helper; the CLI itself runs as the job's user):
  slurm_bb_job_process  at sbatch: checks the directives' syntax and variable names; an
                        error refuses the submission with the message.
  slurm_bb_setup        expands the directives (the job's uid, passwd entry, working
                        directory are known now) and saves the plan in the state directory.
  slurm_bb_data_in      `clusster stage-in` for each stage_in, in order.
  slurm_bb_paths        exports to the job: CLUSSTER_STAGE_IN_COUNT, and for n = 1..count
                        CLUSSTER_STAGE_IN_<n> (DEST), CLUSSTER_DATASET_<n> (as written),
                        CLUSSTER_VERSION_<n> (the version id staged); CLUSSTER_STAGE_OUT_COUNT
                        and CLUSSTER_STAGE_OUT_<n> (SRC).
  slurm_bb_data_out     `clusster stage-out` for each stage_out, when the job succeeded
                        (ExitCode 0:0), or always with stage_out_on_failure = yes.
  slurm_bb_job_teardown removes the job's state (the staged files stay where they are).

The CLI runs as the job's user (setpriv), never as root: root writing into DEST or reading SRC,
both paths the user chose, could be led by a symlink to write or publish any file of the node.
The token is given to it in a client config file owned by the user, mode 0400, removed when the
command ends; so a job's user can read the site's stage token while a stage of theirs runs: give
the site config a token with the `stage` scope only, of the project whose namespaces jobs stage.

The site config (CLUSSTER_SLURM_CONF in slurmctld's environment, else /etc/clusster/slurm.conf):
  KEY = VALUE lines, # comments; see contrib/slurm/clusster-directives.sh for the keys.
A failure returns slurm.ERROR with the CLI's message (scontrol show job shows it as the job's
reason); every command and its output is appended to <log_dir>/<job id>.log.
]]

local CONF_PATH = os.getenv("CLUSSTER_SLURM_CONF") or "/etc/clusster/slurm.conf"
local DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
local FIXED_VARS = {
	"SLURM_JOB_ID", "SLURM_JOB_UID", "SLURM_JOB_GID", "SLURM_JOB_USER", "USER", "HOME",
	"SLURM_JOB_WORK_DIR",
}
local KNOWN_KEYS = {
	endpoint = true, token = true, token_file = true, ca_file = true, clusster = true, state_dir = true,
	log_dir = true, stage_in_timeout = true, pin_for = true, stage_out_on_failure = true,
	on_stage_in_failure = true, path = true,
}

-- ------------------------------------------------------------------ small helpers

local function log_info(msg)
	if slurm and slurm.log_info then slurm.log_info("clusster: %s", msg) end
end

local function read_file(path)
	local f = io.open(path, "rb")
	if not f then return nil end
	local text = f:read("*a")
	f:close()
	return text
end

local function write_file(path, text, mode)
	local f, err = io.open(path, mode or "w")
	if not f then return nil, err end
	f:write(text)
	f:close()
	return true
end

-- A word for sh, single-quoted.
local function sh(word)
	return "'" .. tostring(word):gsub("'", "'\\''") .. "'"
end

local function trim(s)
	return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function run(cmd)
	-- os.execute's result differs between Lua 5.1 (a number) and later (true/false, how, code).
	local a, _, c = os.execute(cmd)
	if type(a) == "number" then
		if a > 255 then return math.floor(a / 256) end
		return a
	end
	if a then return 0 end
	return c or 1
end

-- The first line of a command's stdout (nil if none).
local function first_line(cmd)
	local p = io.popen(cmd)
	if not p then return nil end
	local line = p:read("*l")
	p:close()
	return line
end

local function mkdir_p(path, mode)
	return run("mkdir -p " .. sh(path) .. " && chmod " .. mode .. " " .. sh(path)) == 0
end

-- ------------------------------------------------------------------ site config

local function load_conf()
	local conf = {
		clusster = "clusster", state_dir = "/var/spool/clusster-slurm",
		log_dir = "/var/log/clusster-slurm", stage_in_timeout = "1h", pin_for = "24h",
		stage_out_on_failure = "no", path = DEFAULT_PATH, env = {}, env_order = {},
	}
	local f = io.open(CONF_PATH, "r")
	if not f then return nil, "cannot read the site config " .. CONF_PATH end
	local n = 0
	for line in f:lines() do
		n = n + 1
		line = trim(line)
		if line ~= "" and line:sub(1, 1) ~= "#" then
			local key, value = line:match("^([%w_.]+)%s*=%s*(.-)$")
			if not key then
				f:close()
				return nil, string.format("%s:%d: not KEY = VALUE", CONF_PATH, n)
			end
			local quoted = value:match('^"(.*)"$') or value:match("^'(.*)'$")
			if quoted then value = quoted end
			local name = key:match("^env%.([%a_][%w_]*)$")
			if name then
				if not conf.env[name] then table.insert(conf.env_order, name) end
				conf.env[name] = value
			elseif KNOWN_KEYS[key] then
				conf[key] = value
			else
				f:close()
				return nil, string.format("%s:%d: unknown key %s", CONF_PATH, n, key)
			end
		end
	end
	f:close()
	if not conf.token and conf.token_file then
		local text = read_file(conf.token_file)
		if not text then return nil, "cannot read token_file " .. conf.token_file end
		conf.token = trim(text)
	end
	return conf
end

-- ------------------------------------------------------------------ directives

-- Splits a directive's words: blanks separate, '...' and "..." quote, \ escapes outside quotes.
local function split_words(s)
	local words, cur, have, i, quote = {}, {}, false, 1, nil
	while i <= #s do
		local c = s:sub(i, i)
		if quote then
			if c == quote then quote = nil else table.insert(cur, c) end
		elseif c == "'" or c == '"' then
			quote, have = c, true
		elseif c == "\\" then
			if i == #s then return nil, "a backslash ends the line" end
			i = i + 1
			table.insert(cur, s:sub(i, i))
			have = true
		elseif c:match("%s") then
			if have then table.insert(words, table.concat(cur)) end
			cur, have = {}, false
		else
			table.insert(cur, c)
			have = true
		end
		i = i + 1
	end
	if quote then return nil, "unbalanced " .. quote end
	if have then table.insert(words, table.concat(cur)) end
	return words
end

-- Replaces $NAME, ${NAME} and $$ in word; lookup(name) gives the value or nil.
local function expand(word, lookup)
	local out, i = {}, 1
	while i <= #word do
		local c = word:sub(i, i)
		if c ~= "$" then
			table.insert(out, c)
			i = i + 1
		else
			local name
			local nxt = word:sub(i + 1, i + 1)
			if nxt == "$" then
				table.insert(out, "$")
				i = i + 2
			elseif nxt == "{" then
				local close = word:find("}", i + 2, true)
				if not close then return nil, "unclosed ${ in " .. word end
				name = word:sub(i + 2, close - 1)
				if not name:match("^[%a_][%w_]*$") then return nil, "bad variable name ${" .. name .. "}" end
				i = close + 1
			else
				name = word:match("^[%a_][%w_]*", i + 1)
				if not name then return nil, "a lone $ in " .. word .. " (write $$ for a $)" end
				i = i + 1 + #name
			end
			if name then
				local value = lookup(name)
				if value == nil then return nil, "unknown variable $" .. name end
				table.insert(out, value)
			end
		end
	end
	return table.concat(out)
end

-- The directive words of one header line, or nil if the line is no clusster directive.
-- A bare marker line (#BB_LUA, #BB_LUA clusster) gives an empty list.
local function directive_words(line)
	local rest = line:match("^#CLUSSTER(.*)$")
	local bb = false
	if not rest then
		rest = line:match("^#BB_LUA(.*)$")
		bb = true
	end
	if not rest or (rest ~= "" and not rest:match("^%s")) then return nil end
	local words, err = split_words(rest)
	if not words then return nil, err end
	if bb and words[1] == "clusster" then table.remove(words, 1) end
	return words
end

local function check_dataset(spec, with_ref)
	if with_ref then
		return spec:match("^[^/@%s]+/[^@%s]+@[^@%s]+$") or spec:match("^[^/@%s]+/[^@%s]+$")
	end
	return spec:match("^[^/@%s]+/[^@%s]+$")
end

-- Parses the directives of a job script: a list of {kind = "in"|"out", line = n, words}.
local function parse_script(text)
	local list, n = {}, 0
	for line in (text .. "\n"):gmatch("([^\n]*)\n") do
		n = n + 1
		line = line:gsub("\r$", "")
		local stripped = trim(line)
		if stripped ~= "" then
			if stripped:sub(1, 1) ~= "#" then break end
			local words, err = directive_words(line)
			if err then return nil, string.format("line %d: %s", n, err) end
			if words and #words > 0 then
				local verb = table.remove(words, 1)
				if verb == "stage_in" then
					if #words ~= 2 then
						return nil, string.format("line %d: stage_in takes NS/NAME[@REF] DEST", n)
					end
					table.insert(list, { kind = "in", line = n, words = words })
				elseif verb == "stage_out" then
					if #words < 2 then
						return nil, string.format("line %d: stage_out takes SRC NS/NAME [--tag T] [--rule R]", n)
					end
					local d = { kind = "out", line = n, words = { words[1], words[2] } }
					local i = 3
					while i <= #words do
						local word = words[i]
						local opt, val = word:match("^%-%-(%a+)=(.*)$")
						if not opt then
							opt = word:match("^%-%-(%a+)$")
							val = words[i + 1]
							i = i + 1
						end
						if opt ~= "tag" and opt ~= "rule" then
							return nil, string.format("line %d: stage_out: unexpected %q (--tag T or --rule R)", n, word)
						end
						if val == nil then return nil, string.format("line %d: %s needs a value", n, word) end
						if d[opt] then return nil, string.format("line %d: --%s given twice", n, opt) end
						d[opt] = val
						i = i + 1
					end
					table.insert(list, d)
				else
					return nil, string.format("line %d: unknown directive %q (stage_in or stage_out)", n, verb)
				end
			end
		end
	end
	return list
end

-- The environment a job was submitted with, from slurmctld's state: a native uint32 count,
-- then NUL-terminated NAME=value strings, in the file "environment" beside the job's script.
local function submit_env(script_path)
	local env = {}
	local dir = script_path and script_path:match("^(.*)/script$")
	local data = dir and read_file(dir .. "/environment")
	if data and #data > 4 then
		for entry in data:sub(5):gmatch("([^%z]*)%z") do
			local k, v = entry:match("^([%a_][%w_]*)=(.*)$")
			if k then env[k] = v end
		end
	end
	return env
end

-- The script's text, whether the plugin passed a path (22.05 does) or the text itself.
local function script_text(arg)
	if arg and not arg:find("\n", 1, true) then
		local text = read_file(arg)
		if text then return text, arg end
	end
	return arg or "", nil
end

-- Expands every directive with lookup; stage paths made absolute from workdir.
local function expand_all(list, lookup, workdir)
	local out = {}
	for _, d in ipairs(list) do
		local e = { kind = d.kind, line = d.line }
		local words = {}
		for i, w in ipairs(d.words) do
			local v, err = expand(w, lookup)
			if not v then return nil, string.format("line %d: %s", d.line, err) end
			if v:find("[\t\n]") then return nil, string.format("line %d: %q holds a tab or newline", d.line, v) end
			words[i] = v
		end
		for _, k in ipairs({ "tag", "rule" }) do
			if d[k] then
				local v, err = expand(d[k], lookup)
				if not v then return nil, string.format("line %d: %s", d.line, err) end
				e[k] = v
			end
		end
		local path_i = (d.kind == "in") and 2 or 1
		local dataset_i = (d.kind == "in") and 1 or 2
		e.dataset, e.path = words[dataset_i], words[path_i]
		if not check_dataset(e.dataset, d.kind == "in") then
			return nil, string.format("line %d: %q is not NS/NAME%s", d.line, e.dataset, d.kind == "in" and "[@TAG|@VERSION-ID]" or "")
		end
		if e.path == "" then return nil, string.format("line %d: empty path", d.line) end
		if e.path:sub(1, 1) ~= "/" and workdir then e.path = workdir .. "/" .. e.path end
		table.insert(out, e)
	end
	return out
end

-- ------------------------------------------------------------------ per-job state

local function job_dir(conf, job_id) return conf.state_dir .. "/" .. job_id end

-- Saves the plan: the job's identity and its expanded directives.
local function save_plan(conf, job_id, who, list)
	local lines = {}
	for _, k in ipairs({ "uid", "gid", "user", "home", "workdir" }) do
		table.insert(lines, k .. "\t" .. (who[k] or ""))
	end
	for _, d in ipairs(list) do
		table.insert(lines, table.concat({ d.kind, d.dataset, d.path, d.tag or "", d.rule or "" }, "\t"))
	end
	local dir = job_dir(conf, job_id)
	if not mkdir_p(conf.state_dir, "0711") or not mkdir_p(dir, "0700") then
		return nil, "cannot create " .. dir
	end
	return write_file(dir .. "/plan", table.concat(lines, "\n") .. "\n")
end

local function load_plan(conf, job_id)
	local text = read_file(job_dir(conf, job_id) .. "/plan")
	if not text then return nil, "no plan for job " .. job_id .. " in " .. conf.state_dir end
	local who, list = {}, {}
	for line in text:gmatch("([^\n]*)\n") do
		local f = {}
		for field in (line .. "\t"):gmatch("([^\t]*)\t") do table.insert(f, field) end
		if f[1] == "in" or f[1] == "out" then
			table.insert(list, {
				kind = f[1], dataset = f[2], path = f[3],
				tag = (f[4] ~= "" and f[4]) or nil, rule = (f[5] ~= "" and f[5]) or nil,
			})
		else
			who[f[1]] = f[2]
		end
	end
	return who, list
end

local function job_log(conf, job_id, text)
	if mkdir_p(conf.log_dir, "0750") then
		write_file(conf.log_dir .. "/" .. job_id .. ".log", os.date("%Y-%m-%dT%H:%M:%S ") .. text .. "\n", "a")
	end
end

-- ------------------------------------------------------------------ running the CLI

-- Runs `clusster ARGS...` as the job's user; returns exit code, stdout, stderr.
local function run_cli(conf, job_id, who, args)
	if not conf.endpoint or not conf.token then
		return 1, "", "the site config " .. CONF_PATH .. " needs endpoint and token (or token_file)"
	end
	local dir = job_dir(conf, job_id)
	-- The client config: the user's file, in the state dir (0711: no listing), gone after.
	local client = conf.state_dir .. "/client." .. job_id .. ".toml"
	os.remove(client)
	local text = string.format("endpoint = %q\ntoken = %q\n", conf.endpoint, conf.token)
	if conf.ca_file then text = text .. string.format("ca_file = %q\n", conf.ca_file) end
	local ok = write_file(client, text)
	if not ok or run("chmod 0400 " .. sh(client) .. " && chown " .. sh(who.uid .. ":" .. who.gid) .. " " .. sh(client)) ~= 0 then
		os.remove(client)
		return 1, "", "cannot write the client config " .. client
	end
	local words = {}
	for _, a in ipairs(args) do table.insert(words, sh(a)) end
	local out, err = dir .. "/out", dir .. "/err"
	local cmd = table.concat({
		"cd / && env -i",
		"PATH=" .. sh(conf.path), "HOME=" .. sh(who.home), "USER=" .. sh(who.user),
		"LOGNAME=" .. sh(who.user), "SLURM_JOB_ID=" .. sh(job_id), "RUST_LOG=warn",
		"CLUSSTER_CLIENT_CONFIG=" .. sh(client),
		"setpriv", "--reuid=" .. sh(who.uid), "--regid=" .. sh(who.gid), "--init-groups", "--",
		sh(conf.clusster), table.concat(words, " "),
		">" .. sh(out), "2>" .. sh(err),
	}, " ")
	local code = run(cmd)
	os.remove(client)
	local stdout, stderr = read_file(out) or "", read_file(err) or ""
	os.remove(out)
	os.remove(err)
	job_log(conf, job_id, string.format("clusster %s -> exit %d\n%s%s", table.concat(words, " "), code, stdout, stderr))
	return code, stdout, stderr
end

local EXIT_MEANING = {
	[2] = "usage", [3] = "damage", [4] = "not found", [5] = "no space", [6] = "transfer failed",
	[7] = "verification failed", [8] = "timed out",
}

local function failure(what, code, stderr)
	local msg = trim(stderr):gsub("\n", "; ")
	return string.format("%s failed (exit %d%s): %s", what, code,
		EXIT_MEANING[code] and (", " .. EXIT_MEANING[code]) or "", msg)
end

-- The job's working directory and exit code, from slurmctld.
local function scontrol_job(job_id)
	local line = first_line("scontrol -o show job " .. sh(job_id) .. " 2>/dev/null") or ""
	return {
		workdir = line:match("WorkDir=(%S+)"),
		exit_code = line:match(" ExitCode=(%S+)"),
		state = line:match("JobState=(%S+)"),
	}
end

local function passwd(uid)
	local line = first_line("getent passwd " .. sh(uid))
	if not line then return nil end
	local name, _, _, _, _, home = line:match("^([^:]*):([^:]*):([^:]*):([^:]*):([^:]*):([^:]*)")
	return name, home
end

-- ------------------------------------------------------------------ the plugin's API

--[[ Called at submission, inside slurmctld (no helper process: nothing here forks).
     22.05 passes the script's path; later releases add the uid and gid. ]]
function slurm_bb_job_process(job_script, uid, gid)
	local text, path = script_text(job_script)
	local list, err = parse_script(text)
	if not list then return slurm.ERROR, "clusster directive: " .. err end
	local conf, cerr = load_conf()
	if not conf then return slurm.ERROR, "clusster: " .. cerr end
	-- Check the names, not the values (the uid and working directory are not all known yet).
	local env = submit_env(path)
	local known = {}
	for _, k in ipairs(FIXED_VARS) do known[k] = true end
	for k in pairs(conf.env) do known[k] = true end
	local _, xerr = expand_all(list, function(name)
		if known[name] or env[name] then return "x" end
		return nil
	end, nil)
	if xerr then return slurm.ERROR, "clusster directive: " .. xerr end
	return slurm.SUCCESS
end

function slurm_bb_pools()
	-- No pools: jobs ask for no space, only for staging.
	return slurm.SUCCESS
end

--[[ Called once resources are chosen, before data_in: saves the expanded plan. ]]
function slurm_bb_setup(job_id, uid, gid, pool, bb_size, job_script)
	local conf, cerr = load_conf()
	if not conf then return slurm.ERROR, "clusster: " .. cerr end
	local text, path = script_text(job_script)
	local list, err = parse_script(text)
	if not list then return slurm.ERROR, "clusster directive: " .. err end
	local user, home = passwd(uid)
	if not user then return slurm.ERROR, "clusster: uid " .. tostring(uid) .. " has no passwd entry" end
	local info = scontrol_job(job_id)
	local workdir = info.workdir or home
	local fixed = {
		SLURM_JOB_ID = job_id, SLURM_JOB_UID = uid, SLURM_JOB_GID = gid, SLURM_JOB_USER = user,
		USER = user, HOME = home, SLURM_JOB_WORK_DIR = workdir,
	}
	local site = {}
	for _, name in ipairs(conf.env_order) do
		local v, xerr = expand(conf.env[name], function(k) return fixed[k] or site[k] end)
		if not v then return slurm.ERROR, "clusster: site config env." .. name .. ": " .. xerr end
		site[name] = v
	end
	local env = submit_env(path)
	local expanded, xerr = expand_all(list, function(name)
		return fixed[name] or site[name] or env[name]
	end, workdir)
	if not expanded then return slurm.ERROR, "clusster directive: " .. xerr end
	local who = { uid = uid, gid = gid, user = user, home = home, workdir = workdir }
	local ok, serr = save_plan(conf, job_id, who, expanded)
	if not ok then return slurm.ERROR, "clusster: " .. tostring(serr) end
	job_log(conf, job_id, string.format("setup: user %s (%s:%s), %d directive(s)", user, uid, gid, #expanded))
	return slurm.SUCCESS
end

--[[ Stages in, in order; the version ids are kept for slurm_bb_paths. ]]
function slurm_bb_data_in(job_id, job_script)
	local conf, cerr = load_conf()
	if not conf then return slurm.ERROR, "clusster: " .. cerr end
	local who, list = load_plan(conf, job_id)
	if not who then return slurm.ERROR, "clusster: " .. list end
	local versions, n = {}, 0
	for _, d in ipairs(list) do
		if d.kind == "in" then
			n = n + 1
			local code, stdout, stderr = run_cli(conf, job_id, who, {
				"stage-in", "--json", "--job", job_id, "--timeout", conf.stage_in_timeout,
				"--pin-for", conf.pin_for, "--", d.dataset, d.path,
			})
			if code ~= 0 then
				return slurm.ERROR, failure("clusster stage-in " .. d.dataset .. " " .. d.path, code, stderr)
			end
			versions[n] = stdout:match('"version"%s*:%s*"([^"]*)"') or ""
		end
	end
	local ok = write_file(job_dir(conf, job_id) .. "/versions", table.concat(versions, "\n") .. "\n")
	if not ok then return slurm.ERROR, "clusster: cannot save the versions staged" end
	return slurm.SUCCESS
end

--[[ Called inside slurmctld after data_in: NAME=value lines in path_file go into the job's
     environment. ]]
function slurm_bb_paths(job_id, job_script, path_file)
	local conf, cerr = load_conf()
	if not conf then return slurm.ERROR, "clusster: " .. cerr end
	local who, list = load_plan(conf, job_id)
	if not who then return slurm.ERROR, "clusster: " .. list end
	local versions = {}
	for v in (read_file(job_dir(conf, job_id) .. "/versions") or ""):gmatch("([^\n]*)\n") do
		table.insert(versions, v)
	end
	local lines, n_in, n_out = {}, 0, 0
	for _, d in ipairs(list) do
		if d.kind == "in" then
			n_in = n_in + 1
			table.insert(lines, string.format("CLUSSTER_STAGE_IN_%d=%s", n_in, d.path))
			table.insert(lines, string.format("CLUSSTER_DATASET_%d=%s", n_in, d.dataset))
			table.insert(lines, string.format("CLUSSTER_VERSION_%d=%s", n_in, versions[n_in] or ""))
		else
			n_out = n_out + 1
			table.insert(lines, string.format("CLUSSTER_STAGE_OUT_%d=%s", n_out, d.path))
		end
	end
	table.insert(lines, "CLUSSTER_STAGE_IN_COUNT=" .. n_in)
	table.insert(lines, "CLUSSTER_STAGE_OUT_COUNT=" .. n_out)
	local ok, err = write_file(path_file, table.concat(lines, "\n") .. "\n", "a")
	if not ok then return slurm.ERROR, "clusster: cannot write " .. tostring(path_file) .. ": " .. tostring(err) end
	return slurm.SUCCESS
end

function slurm_bb_real_size(job_id)
	return slurm.SUCCESS
end

function slurm_bb_pre_run(job_id, job_script)
	return slurm.SUCCESS
end

function slurm_bb_post_run(job_id, job_script)
	return slurm.SUCCESS
end

--[[ Stages out, in order, if the job succeeded (or stage_out_on_failure = yes). ]]
function slurm_bb_data_out(job_id, job_script)
	local conf, cerr = load_conf()
	if not conf then return slurm.ERROR, "clusster: " .. cerr end
	local who, list = load_plan(conf, job_id)
	if not who then return slurm.ERROR, "clusster: " .. list end
	local outs = {}
	for _, d in ipairs(list) do
		if d.kind == "out" then table.insert(outs, d) end
	end
	if #outs == 0 then return slurm.SUCCESS end
	local info = scontrol_job(job_id)
	if info.exit_code ~= "0:0" and conf.stage_out_on_failure ~= "yes" then
		job_log(conf, job_id, string.format("stage-out skipped: the job ended with ExitCode=%s, state %s",
			tostring(info.exit_code), tostring(info.state)))
		return slurm.SUCCESS
	end
	local done = {}
	for _, d in ipairs(outs) do
		local args = { "stage-out", "--json", "--job", job_id }
		if d.tag then table.insert(args, "--tag"); table.insert(args, d.tag) end
		if d.rule then table.insert(args, "--rule"); table.insert(args, d.rule) end
		table.insert(args, "--")
		table.insert(args, d.path)
		table.insert(args, d.dataset)
		local code, stdout, stderr = run_cli(conf, job_id, who, args)
		if code ~= 0 then
			return slurm.ERROR, failure("clusster stage-out " .. d.path .. " " .. d.dataset, code, stderr)
		end
		table.insert(done, d.dataset .. "@" .. (stdout:match('"version"%s*:%s*"([^"]*)"') or "?"))
	end
	log_info("job " .. job_id .. " staged out " .. table.concat(done, " "))
	return slurm.SUCCESS
end

--[[ The end of every job that had a burst buffer: its state goes; its files stay. ]]
function slurm_bb_job_teardown(job_id, job_script, hurry)
	local conf = load_conf()
	if conf and job_id and job_id:match("^%d+$") then
		run("rm -rf " .. sh(job_dir(conf, job_id)) .. " " .. sh(conf.state_dir .. "/client." .. job_id .. ".toml"))
	end
	return slurm.SUCCESS
end

--[[ scontrol show bbstat [ARGS]: the jobs with staging state here. ]]
function slurm_bb_get_status(uid, gid, ...)
	local conf, cerr = load_conf()
	if not conf then return slurm.SUCCESS, "clusster: " .. cerr .. "\n" end
	local lines = { "clusster staging: site config " .. CONF_PATH .. ", endpoint " .. tostring(conf.endpoint) }
	local p = io.popen("ls -1 " .. sh(conf.state_dir) .. " 2>/dev/null")
	if p then
		for name in p:lines() do
			if name:match("^%d+$") then table.insert(lines, "job " .. name .. ": staging state present") end
		end
		p:close()
	end
	return slurm.SUCCESS, table.concat(lines, "\n") .. "\n"
end
