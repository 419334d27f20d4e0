package main

// MOB pages: the vSphere Managed Object Browser (https://<host>/mob), rendered
// from the simulator's live objects in the layout VMware documents: a
// "Properties" table with NAME / TYPE / VALUE columns whose values are text
// (strings in double quotes), links to other managed objects
// (<a href="/mob/?moid=...">), nested data objects (an inner table) or
// "Unset"; a "Methods" table; method pages with a form carrying the
// vmware-session-nonce hidden field, which must be posted back.
//
// Added: /mob, /mob/?moid=X, /mob/?moid=X&doPath=a.b, /mob/?moid=X&method=M
// (GET: form, POST: invoke). The simulator has no HostSystem.vm, so a host's
// `vm` property is derived from VirtualMachine.runtime.host.
//
// Control: /ctl/mob?enabled=0|1 (disabled: 503 as ESXi 6.0+ answers by
// default), /ctl/mob-stats (MOB requests seen).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/types"
)

const mobCookie = "vmware_soap_session"

type mobState struct {
	mu       sync.Mutex
	disabled bool
	nonces   map[string]string // session cookie -> nonce
	requests int
}

var mob = &mobState{nonces: map[string]string{}}

func init() {
	extraRoutes = append(extraRoutes, func(h *Harness) {
		h.Front.HandleFunc("/mob", h.serveMOB)
		h.Front.HandleFunc("/mob/", h.serveMOB)
		h.Ctl.HandleFunc("/ctl/mob", func(w http.ResponseWriter, r *http.Request) {
			mob.mu.Lock()
			mob.disabled = r.URL.Query().Get("enabled") == "0"
			on := !mob.disabled
			mob.mu.Unlock()
			writeJSON(w, map[string]bool{"enabled": on})
		})
		h.Ctl.HandleFunc("/ctl/mob-stats", func(w http.ResponseWriter, r *http.Request) {
			mob.mu.Lock()
			n := mob.requests
			mob.mu.Unlock()
			writeJSON(w, map[string]int{"requests": n})
		})
	})
}

var mobTypes = []string{"ServiceInstance", "Folder", "HostSystem", "VirtualMachine", "Datacenter",
	"ClusterComputeResource", "ComputeResource", "ResourcePool", "Task", "Datastore", "Network"}

func lookupMoid(moid string) (types.ManagedObjectReference, interface{}) {
	for _, t := range mobTypes {
		ref := types.ManagedObjectReference{Type: t, Value: moid}
		if obj := simulator.Map.Get(ref); obj != nil {
			return ref, obj
		}
	}
	return types.ManagedObjectReference{}, nil
}

func mobPage(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprint(w, `<html><head><title>Managed Object Browser</title>`+
		`<link href="/mob/?cmd=css" type="text/css" rel="stylesheet"></head><body>`+
		`<table width="100%" cellpadding="2" cellspacing="0" class="header"><tr><td><a href="/mob/?moid=ServiceInstance">Home</a></td></tr></table>`+
		body+`</body></html>`)
}

func (h *Harness) serveMOB(w http.ResponseWriter, r *http.Request) {
	mob.mu.Lock()
	mob.requests++
	disabled := mob.disabled
	mob.mu.Unlock()
	h.mu.Lock()
	anyDark := false
	for _, d := range h.dark {
		anyDark = anyDark || d
	}
	h.mu.Unlock()
	if !h.VPX && anyDark {
		hangUp(w)
		return
	}
	if disabled {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "503 Service Unavailable")
		return
	}
	user, pass, ok := r.BasicAuth()
	want := h.Service.Listen.User
	wantPass, _ := want.Password()
	if !ok || user != want.Username() || pass != wantPass {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, "401 Unauthorized")
		return
	}
	q := r.URL.Query()
	moid := q.Get("moid")
	if moid == "" {
		moid = "ServiceInstance"
	}
	ref, obj := lookupMoid(moid)
	if obj == nil {
		mobPage(w, http.StatusInternalServerError, `<h1>Fault</h1><p class="fault">ManagedObjectNotFound</p><p>The object has already been deleted or has not been completely created: `+html.EscapeString(moid)+`</p>`)
		return
	}
	if m := q.Get("method"); m != "" {
		h.mobMethod(w, r, ref, m)
		return
	}
	var out strings.Builder
	title := "ManagedObjectReference:" + ref.Type
	var val reflect.Value
	var props []mobProp
	err := withLock(obj, func() error {
		val = reflect.ValueOf(obj)
		for val.Kind() == reflect.Ptr {
			val = val.Elem()
		}
		if path := q.Get("doPath"); path != "" {
			root := val
			if vm, ok := obj.(*simulator.VirtualMachine); ok && (path == "summary" || strings.HasPrefix(path, "summary.")) {
				// vSphere keeps summary.guest in step with guest; 0.24.2 does not.
				s := vm.Summary
				g := types.VirtualMachineGuestSummary{}
				if s.Guest != nil {
					g = *s.Guest
				}
				if vm.Guest != nil {
					g.IpAddress, g.ToolsRunningStatus, g.HostName = vm.Guest.IpAddress, vm.Guest.ToolsRunningStatus, vm.Guest.HostName
					if vm.Config != nil {
						g.GuestFullName = vm.Config.GuestFullName
					}
				}
				s.Guest = &g
				root = reflect.ValueOf(struct {
					Summary types.VirtualMachineSummary `mo:"summary"`
				}{s})
			}
			v, err := walkPath(root, ref, path)
			if err != nil {
				return err
			}
			title = typeName(v)
			props = structProps(v)
			if len(props) == 1 && props[0].name == "value" {
				// An array or a simple value: one row named by the path's
				// last part (doPath=guest.net shows a "net" row).
				parts := strings.Split(path, ".")
				props[0].name = parts[len(parts)-1]
			}
		} else {
			props = structProps(val)
			if ref.Type == "HostSystem" {
				kept := props[:0]
				for _, p := range props {
					if p.name != "vm" {
						kept = append(kept, p)
					}
				}
				props = append(kept, mobProp{"vm", "ManagedObjectReference:VirtualMachine[]", reflect.ValueOf(h.vmsOnHost(ref.Value))})
			}
		}
		return nil
	})
	if err != nil {
		mobPage(w, http.StatusInternalServerError, `<h1>Fault</h1><p class="fault">InvalidArgument</p><p>`+html.EscapeString(err.Error())+`</p>`)
		return
	}
	fmt.Fprintf(&out, `<table class="clean"><tr><td><b>Managed Object Type:</b> %s</td></tr><tr><td><b>Managed Object ID:</b> %s</td></tr></table>`,
		html.EscapeString(title), html.EscapeString(ref.Value))
	out.WriteString(`<p class="table-title">Properties</p>`)
	renderProps(&out, props, 0)
	if q.Get("doPath") == "" {
		out.WriteString(`<p class="table-title">Methods</p><table><tr><th>RETURN TYPE</th><th>NAME</th></tr>`)
		for _, m := range mobMethods[ref.Type] {
			fmt.Fprintf(&out, `<tr><td class="c1">%s</td><td class="c2"><a href="/mob/?moid=%s&amp;method=%s">%s</a></td></tr>`,
				html.EscapeString(m[1]), html.EscapeString(ref.Value), m[0], m[0])
		}
		out.WriteString(`</table>`)
	}
	mobPage(w, http.StatusOK, out.String())
}

// withLock runs f under the registry lock of obj where it has one.
func withLock(obj interface{}, f func() error) error {
	var err error
	if mr, ok := obj.(mobRef); ok {
		simulator.Map.WithLock(mr, func() { err = f() })
		return err
	}
	return f()
}

type mobRef interface {
	Reference() types.ManagedObjectReference
}

func (h *Harness) vmsOnHost(host string) []types.ManagedObjectReference {
	out := []types.ManagedObjectReference{}
	for _, vm := range h.allVMs() {
		if vm.Runtime.Host != nil && vm.Runtime.Host.Value == host {
			out = append(out, vm.Self)
		}
	}
	return out
}

type mobProp struct {
	name, typ string
	val       reflect.Value
}

func fieldName(f reflect.StructField) string {
	for _, tag := range []string{"mo", "xml"} {
		if t := f.Tag.Get(tag); t != "" {
			n := strings.Split(t, ",")[0]
			if n == "-" {
				return ""
			}
			if n != "" {
				return n
			}
		}
	}
	return ""
}

// structProps lists a struct's properties, flattening embedded structs.
func structProps(v reflect.Value) []mobProp {
	for v.Kind() == reflect.Ptr || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return []mobProp{{"value", typeName(v), v}}
	}
	var out []mobProp
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" {
			continue
		}
		if f.Anonymous {
			out = append(out, structProps(v.Field(i))...)
			continue
		}
		n := fieldName(f)
		if n == "" {
			continue
		}
		out = append(out, mobProp{n, typeName(v.Field(i)), v.Field(i)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

var morType = reflect.TypeOf(types.ManagedObjectReference{})

func typeName(v reflect.Value) string {
	t := v.Type()
	for v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
		t = v.Type()
	}
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	switch {
	case t == morType:
		return "ManagedObjectReference"
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8:
		e := t.Elem()
		for e.Kind() == reflect.Ptr {
			e = e.Elem()
		}
		if e == morType {
			return "ManagedObjectReference[]"
		}
		return e.Name() + "[]"
	case t.Kind() == reflect.Int32:
		return "int"
	case t.Kind() == reflect.Int64:
		return "long"
	case t.Kind() == reflect.String && t.Name() != "string":
		return t.Name() // enums
	}
	return t.Name()
}

func walkPath(v reflect.Value, ref types.ManagedObjectReference, path string) (reflect.Value, error) {
	for _, part := range strings.Split(path, ".") {
		found := false
		for _, p := range structProps(v) {
			if p.name == part {
				v, found = p.val, true
				break
			}
		}
		if !found {
			return v, fmt.Errorf("invalid property path %q on %s", path, ref.Value)
		}
	}
	return v, nil
}

const maxInline = 3

func renderProps(out *strings.Builder, props []mobProp, depth int) {
	out.WriteString(`<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr>`)
	for _, p := range props {
		fmt.Fprintf(out, `<tr><td class="c2">%s</td><td class="c1">%s</td><td>`, html.EscapeString(p.name), html.EscapeString(p.typ))
		renderValue(out, p.val, depth)
		out.WriteString(`</td></tr>`)
	}
	out.WriteString(`</table>`)
}

func renderValue(out *strings.Builder, v reflect.Value, depth int) {
	for v.Kind() == reflect.Ptr || v.Kind() == reflect.Interface {
		if v.IsNil() {
			out.WriteString("Unset")
			return
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == morType:
		ref := v.Interface().(types.ManagedObjectReference)
		fmt.Fprintf(out, `<a href="/mob/?moid=%s">%s</a>`, html.EscapeString(ref.Value), html.EscapeString(ref.Value))
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			out.WriteString("Unset")
			return
		}
		out.WriteString(`<ul class="list">`)
		for i := 0; i < v.Len(); i++ {
			out.WriteString("<li>")
			renderValue(out, v.Index(i), depth)
			out.WriteString("</li>")
		}
		out.WriteString(`</ul>`)
	case v.Kind() == reflect.Struct:
		if depth >= maxInline {
			out.WriteString(`<span class="more">more...</span>`)
			return
		}
		renderProps(out, structProps(v), depth+1)
	case v.Kind() == reflect.String:
		if v.String() == "" && v.Type().Name() != "string" {
			out.WriteString("Unset")
			return
		}
		out.WriteString(`"` + html.EscapeString(v.String()) + `"`)
	case v.Kind() == reflect.Bool:
		fmt.Fprintf(out, "%t", v.Bool())
	default:
		out.WriteString(html.EscapeString(fmt.Sprint(v.Interface())))
	}
}

// mobMethods: the methods shown (and invocable) per type: name, return type.
var mobMethods = map[string][][2]string{
	"VirtualMachine": {
		{"PowerOnVM_Task", "ManagedObjectReference:Task"},
		{"PowerOffVM_Task", "ManagedObjectReference:Task"},
		{"ResetVM_Task", "ManagedObjectReference:Task"},
		{"ShutdownGuest", "void"},
		{"RebootGuest", "void"},
	},
	"HostSystem": {
		{"ShutdownHost_Task", "ManagedObjectReference:Task"},
		{"RebootHost_Task", "ManagedObjectReference:Task"},
		{"EnterMaintenanceMode_Task", "ManagedObjectReference:Task"},
		{"ExitMaintenanceMode_Task", "ManagedObjectReference:Task"},
	},
}

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *Harness) mobMethod(w http.ResponseWriter, r *http.Request, ref types.ManagedObjectReference, method string) {
	known := false
	for _, m := range mobMethods[ref.Type] {
		known = known || m[0] == method
	}
	if !known {
		mobPage(w, http.StatusInternalServerError, `<h1>Fault</h1><p class="fault">MethodNotFound</p><p>`+html.EscapeString(method)+`</p>`)
		return
	}
	session := ""
	if c, err := r.Cookie(mobCookie); err == nil {
		session = c.Value
	}
	if r.Method != http.MethodPost {
		if session == "" {
			session = newNonce()
			http.SetCookie(w, &http.Cookie{Name: mobCookie, Value: session, Path: "/", HttpOnly: true, Secure: true})
		}
		mob.mu.Lock()
		nonce, ok := mob.nonces[session]
		if !ok {
			nonce = newNonce()
			mob.nonces[session] = nonce
		}
		mob.mu.Unlock()
		extra := ""
		param := func(name, typ, val string) string {
			return fmt.Sprintf(`<tr><td class="c2">%s</td><td class="c1">%s</td><td><textarea name="%s" rows="1" cols="40">%s</textarea></td></tr>`, name, typ, name, val)
		}
		switch method {
		case "ShutdownHost_Task", "RebootHost_Task":
			extra = param("force", "boolean", "true")
		case "EnterMaintenanceMode_Task":
			extra = param("timeout", "int", "") + param("evacuatePoweredOffVms", "boolean (optional)", "") +
				param("maintenanceSpec", "HostMaintenanceSpec (optional)", "")
		case "ExitMaintenanceMode_Task":
			extra = param("timeout", "int", "")
		}
		mobPage(w, http.StatusOK, fmt.Sprintf(`<p class="table-title">Method: %s</p>`+
			`<form name="invoke" method="POST" action="/mob/?moid=%s&amp;method=%s">`+
			`<input name="vmware-session-nonce" type="hidden" value="%s">`+
			`<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr>%s</table>`+
			`<input type="submit" value="Invoke Method"></form>`,
			method, html.EscapeString(ref.Value), method, nonce, extra))
		return
	}
	_ = r.ParseForm()
	mob.mu.Lock()
	want, ok := mob.nonces[session]
	mob.mu.Unlock()
	if !ok || r.PostForm.Get("vmware-session-nonce") != want {
		mobPage(w, http.StatusBadRequest, `<h1>Fault</h1><p class="fault">InvalidRequest</p><p>Missing or invalid vmware-session-nonce: reload the method page and post its form.</p>`)
		return
	}
	fault, result := h.mobInvoke(ref, method, r.PostForm)
	if fault != "" {
		mobPage(w, http.StatusInternalServerError, fmt.Sprintf(`<p class="table-title">Method Invocation Result: Fault</p>`+
			`<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr><tr><td class="c2">fault</td><td class="c1">%s</td><td>"%s"</td></tr></table>`,
			html.EscapeString(fault), html.EscapeString(result)))
		return
	}
	body := `<p class="table-title">Method Invocation Result: void</p>`
	if result != "" {
		body = fmt.Sprintf(`<p class="table-title">Method Invocation Result: ManagedObjectReference:Task</p><a href="/mob/?moid=%s">%s</a>`, result, result)
	}
	mobPage(w, http.StatusOK, body)
}

func faultName(err error) (string, string) {
	var f interface{}
	if te, ok := err.(task.Error); ok && te.LocalizedMethodFault != nil {
		f = te.LocalizedMethodFault.Fault
	} else if sf, ok := err.(interface{ Fault() types.BaseMethodFault }); ok {
		f = sf.Fault()
	}
	name := "SystemError"
	if f != nil {
		name = strings.TrimPrefix(strings.TrimPrefix(fmt.Sprintf("%T", f), "*"), "types.")
	}
	return name, err.Error()
}

// mobInvoke runs the method; returns (fault type, message) or ("", task id).
func (h *Harness) mobInvoke(ref types.ManagedObjectReference, method string, form url.Values) (string, string) {
	ctx := context.Background()
	force := form.Get("force") != "false"
	if method == "EnterMaintenanceMode_Task" || method == "ExitMaintenanceMode_Task" {
		// timeout is required, as on the real method page.
		timeout, err := strconv.Atoi(strings.TrimSpace(form.Get("timeout")))
		if err != nil {
			return "InvalidArgument", "A specified parameter was not correct: timeout"
		}
		host := object.NewHostSystem(h.Client, ref)
		var t *object.Task
		if method == "EnterMaintenanceMode_Task" {
			evacuate := strings.TrimSpace(form.Get("evacuatePoweredOffVms")) == "true"
			t, err = host.EnterMaintenanceMode(ctx, int32(timeout), evacuate, nil)
		} else {
			t, err = host.ExitMaintenanceMode(ctx, int32(timeout))
		}
		if err != nil {
			return faultName(err)
		}
		if err := t.Wait(ctx); err != nil {
			return faultName(err)
		}
		return "", t.Reference().Value
	}
	if ref.Type == "HostSystem" {
		rec := httptest.NewRecorder()
		h.hostPower(rec, soapCall{Method: method, This: ref.Value, Force: force})
		if rec.Code != http.StatusOK {
			return "InvalidState", "The operation is not allowed in the current state."
		}
		return "", ""
	}
	vm := h.vmByRef(ref.Value)
	h.mu.Lock()
	mode := h.vmMode[ref.Value]
	h.mu.Unlock()
	ovm := object.NewVirtualMachine(h.Client, ref)
	var t *object.Task
	var err error
	switch method {
	case "PowerOnVM_Task":
		t, err = ovm.PowerOn(ctx)
	case "PowerOffVM_Task":
		t, err = ovm.PowerOff(ctx)
	case "ResetVM_Task":
		t, err = ovm.Reset(ctx)
	case "ShutdownGuest", "RebootGuest":
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return "InvalidPowerState", "The attempted operation cannot be performed in the current state (" + string(vm.Runtime.PowerState) + ")."
		}
		if mode == "toolless" {
			return "ToolsUnavailable", "Cannot complete operation because VMware Tools is not running in this virtual machine."
		}
		if method == "RebootGuest" || mode == "stubborn" {
			return "", ""
		}
		if err := h.shutdownGuest(ctx, ref); err != nil {
			return faultName(err)
		}
		return "", ""
	}
	if err != nil {
		return faultName(err)
	}
	if err := t.Wait(ctx); err != nil {
		return faultName(err)
	}
	switch method {
	case "PowerOnVM_Task", "ResetVM_Task":
		if mode != "toolless" {
			h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsRunning))
		}
	case "PowerOffVM_Task":
		h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning))
	}
	return "", t.Reference().Value
}
