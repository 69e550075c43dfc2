// Command health reads a Kubernetes object list (kubectl get -o json) on stdin and prints, for
// each object, what kstatus (sigs.k8s.io/cli-utils, as Flux and kubectl use it) and an Argo CD
// Lua health script (run by gopher-lua, the interpreter Argo CD embeds) say of it: one JSON
// object per line.
//
//	health -lua charts/mailward/files/argocd-health.lua < objects.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind           string `json:"kind"`
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	KStatus        string `json:"kstatus"`
	KStatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo,omitempty"`
	ArgoMessage    string `json:"argoMessage,omitempty"`
}

func main() {
	script := flag.String("lua", "", "an Argo CD health script (Lua); empty: kstatus only")
	flag.Parse()
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// apimachinery's decoder keeps integers int64, as kstatus expects of an API object; it does
	// so only when decoding into a map.
	var list map[string]interface{}
	if err := utiljson.Unmarshal(raw, &list); err != nil {
		fail(fmt.Errorf("stdin is not an object list: %w", err))
	}
	items, _ := list["items"].([]interface{})
	var source string
	if *script != "" {
		text, err := os.ReadFile(*script)
		if err != nil {
			fail(err)
		}
		source = string(text)
	}
	out := json.NewEncoder(os.Stdout)
	for _, element := range items {
		item, ok := element.(map[string]interface{})
		if !ok {
			fail(fmt.Errorf("an item is not an object: %v", element))
		}
		object := &unstructured.Unstructured{Object: item}
		result, err := status.Compute(object)
		if err != nil {
			fail(fmt.Errorf("kstatus of %s/%s: %w", object.GetNamespace(), object.GetName(), err))
		}
		line := verdict{
			Kind:           object.GetKind(),
			Namespace:      object.GetNamespace(),
			Name:           object.GetName(),
			KStatus:        result.Status.String(),
			KStatusMessage: result.Message,
		}
		if source != "" {
			line.Argo, line.ArgoMessage, err = argoHealth(source, item)
			if err != nil {
				fail(fmt.Errorf("Lua health of %s/%s: %w", object.GetNamespace(), object.GetName(), err))
			}
		}
		if err := out.Encode(line); err != nil {
			fail(err)
		}
	}
}

// argoHealth runs the script the way Argo CD's util/lua does: only the safe standard libraries
// opened, the object as the global `obj`, and a table {status=..., message=...} returned.
func argoHealth(source string, object map[string]interface{}) (string, string, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.CoroutineLibName, lua.OpenCoroutine},
	} {
		state.Push(state.NewFunction(library.open))
		state.Push(lua.LString(library.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(source); err != nil {
		return "", "", err
	}
	returned, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", state.Get(-1).Type())
	}
	health := lua.LVAsString(returned.RawGetString("status"))
	switch health {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "", "", fmt.Errorf("status %q is not an Argo CD health status", health)
	}
	return health, lua.LVAsString(returned.RawGetString("message")), nil
}

// toLua converts decoded JSON as Argo CD does: objects and arrays become tables (arrays from 1).
func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch typed := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(typed)
	case float64:
		return lua.LNumber(typed)
	case int64:
		return lua.LNumber(typed)
	case string:
		return lua.LString(typed)
	case []interface{}:
		table := state.NewTable()
		for _, element := range typed {
			table.Append(toLua(state, element))
		}
		return table
	case map[string]interface{}:
		table := state.NewTable()
		for key, element := range typed {
			table.RawSetString(key, toLua(state, element))
		}
		return table
	default:
		return lua.LString(fmt.Sprint(typed))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "health:", err)
	os.Exit(1)
}
