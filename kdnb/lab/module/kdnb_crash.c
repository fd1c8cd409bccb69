// SPDX-License-Identifier: GPL-2.0
/*
 * kdnb_crash: provoke one well-known kernel failure on request, for the kdnb lab.
 *
 * Loading the module creates a slab cache "kdnb_obj" holding `live` objects (and, for the
 * slab-leak scenario, `leak` more that are never freed), and a file /proc/kdnb_crash.
 * Writing an action name to that file makes the writing task do it:
 *
 *   panic        panic("kdnb_crash: deliberate panic")
 *   oops         write through a NULL pointer (panic_on_oops makes it fatal)
 *   bug          BUG()
 *   warn         WARN() (panic_on_warn makes it fatal)
 *   softlockup   spin with preemption disabled (softlockup_panic makes it fatal)
 *   rcu-stall    spin inside rcu_read_lock() with preemption disabled (panic_on_rcu_stall
 *                makes it fatal)
 *   hung         sleep uninterruptibly forever (hung_task_panic makes it fatal)
 *   hold         take kdnb_lock, then spin forever while holding it (cascade, part 1)
 *   wait         take kdnb_lock: blocks in D state behind "hold" (cascade, part 2)
 *   abba-a       take kdnb_lock_a, then kdnb_lock_b (deadlock, part 1)
 *   abba-b       take kdnb_lock_b, then kdnb_lock_a (deadlock, part 2): both block in D state
 *   wq-stall     queue kdnb_work, whose function sleeps forever, then flush_work() it (D state)
 *   rwsem-read   take kdnb_rwsem for reading and sleep forever, interruptibly (rwsem, part 1)
 *   rwsem-write  take kdnb_rwsem for writing: blocks in D state behind the reader (part 2)
 *
 * The lock scenarios print the addresses of their locks and who holds what (%px), so the lab's
 * ground truth can name them.
 *
 * Every object carries magic 0x6b646e62 + index and the tag "kdnb-obj-NNNN" so a dump reader
 * can find and count them.
 *
 * The same source builds without warnings (W=1) against Debian's 5.10, 6.1, 6.12 and 7.2
 * headers: every API used here exists unchanged from 5.6 (struct proc_ops) on.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/rwsem.h>
#include <linux/workqueue.h>

#define KDNB_MAGIC 0x6b646e62u

struct kdnb_obj {
	u32 magic;
	u32 index;
	char tag[24];
};

static int live = 16;
module_param(live, int, 0444);
MODULE_PARM_DESC(live, "objects kept (and freed at unload) in kdnb_obj");

static int leak;
module_param(leak, int, 0444);
MODULE_PARM_DESC(leak, "objects allocated from kdnb_obj and never freed (slab-leak)");

static char *action;
module_param(action, charp, 0444);
MODULE_PARM_DESC(action, "action to perform at load time instead of via /proc/kdnb_crash");

static struct kmem_cache *kdnb_cache;
static struct kdnb_obj **kdnb_live;
static int kdnb_nlive;
static DEFINE_MUTEX(kdnb_lock);
static DECLARE_COMPLETION(kdnb_never);
static DEFINE_MUTEX(kdnb_lock_a);
static DEFINE_MUTEX(kdnb_lock_b);
static DECLARE_RWSEM(kdnb_rwsem);
static struct work_struct kdnb_work;
static int *kdnb_null_ptr;	/* stays NULL; volatile access below defeats the optimiser */
static unsigned long kdnb_spins;

/* A constructor also keeps SLUB from merging kdnb_obj into another cache, so it stays visible. */
static void kdnb_obj_ctor(void *p)
{
	memset(p, 0, sizeof(struct kdnb_obj));
}

static struct kdnb_obj *kdnb_alloc_obj(u32 index)
{
	struct kdnb_obj *o = kmem_cache_alloc(kdnb_cache, GFP_KERNEL);

	if (o) {
		o->magic = KDNB_MAGIC + index;
		o->index = index;
		snprintf(o->tag, sizeof(o->tag), "kdnb-obj-%04u", index);
	}
	return o;
}

static void __noreturn kdnb_spin_forever(void)
{
	for (;;) {
		WRITE_ONCE(kdnb_spins, kdnb_spins + 1);
		cpu_relax();
	}
}

static void __noreturn kdnb_sleep_forever(void)
{
	for (;;)
		msleep_interruptible(1000);
}

static void kdnb_wq_fn(struct work_struct *work)
{
	pr_emerg("kdnb_crash: work %px (kdnb_wq_fn) runs in %s[%d] and never returns\n",
		 work, current->comm, task_pid_nr(current));
	kdnb_sleep_forever();
}

static void kdnb_abba(struct mutex *first, const char *first_name, struct mutex *second,
		      const char *second_name)
{
	mutex_lock(first);
	pr_emerg("kdnb_crash: %s[%d] holds %s (%px) and wants %s (%px)\n", current->comm,
		 task_pid_nr(current), first_name, first, second_name, second);
	msleep(1000);
	mutex_lock(second);
}

static int kdnb_do(const char *what)
{
	pr_emerg("kdnb_crash: action '%s' by %s[%d] on CPU %d\n",
		 what, current->comm, task_pid_nr(current), raw_smp_processor_id());
	if (!strcmp(what, "panic")) {
		panic("kdnb_crash: deliberate panic");
	} else if (!strcmp(what, "oops")) {
		WRITE_ONCE(*(volatile int *)READ_ONCE(kdnb_null_ptr), 0x6b646e62);
	} else if (!strcmp(what, "bug")) {
		BUG();
	} else if (!strcmp(what, "warn")) {
		WARN(1, "kdnb_crash: deliberate warning");
	} else if (!strcmp(what, "softlockup")) {
		preempt_disable();
		kdnb_spin_forever();
	} else if (!strcmp(what, "rcu-stall")) {
		rcu_read_lock();
		preempt_disable();
		pr_emerg("kdnb_crash: %s[%d] spins in an RCU read-side section on CPU %d\n",
			 current->comm, task_pid_nr(current), raw_smp_processor_id());
		kdnb_spin_forever();
	} else if (!strcmp(what, "hung")) {
		wait_for_completion(&kdnb_never);
	} else if (!strcmp(what, "hold")) {
		mutex_lock(&kdnb_lock);
		pr_emerg("kdnb_crash: %s[%d] holds kdnb_lock and spins\n",
			 current->comm, task_pid_nr(current));
		for (;;) {
			WRITE_ONCE(kdnb_spins, kdnb_spins + 1);
			cpu_relax();
			if ((kdnb_spins & 0xfffff) == 0)
				cond_resched();
		}
	} else if (!strcmp(what, "wait")) {
		pr_emerg("kdnb_crash: %s[%d] waits for kdnb_lock (%px)\n", current->comm,
			 task_pid_nr(current), &kdnb_lock);
		mutex_lock(&kdnb_lock);
		mutex_unlock(&kdnb_lock);
	} else if (!strcmp(what, "abba-a")) {
		kdnb_abba(&kdnb_lock_a, "kdnb_lock_a", &kdnb_lock_b, "kdnb_lock_b");
	} else if (!strcmp(what, "abba-b")) {
		kdnb_abba(&kdnb_lock_b, "kdnb_lock_b", &kdnb_lock_a, "kdnb_lock_a");
	} else if (!strcmp(what, "wq-stall")) {
		schedule_work(&kdnb_work);
		msleep(200);
		pr_emerg("kdnb_crash: %s[%d] flushes work %px\n", current->comm, task_pid_nr(current),
			 &kdnb_work);
		flush_work(&kdnb_work);
	} else if (!strcmp(what, "rwsem-read")) {
		down_read(&kdnb_rwsem);
		pr_emerg("kdnb_crash: %s[%d] holds kdnb_rwsem (%px) for reading and sleeps\n",
			 current->comm, task_pid_nr(current), &kdnb_rwsem);
		kdnb_sleep_forever();
	} else if (!strcmp(what, "rwsem-write")) {
		pr_emerg("kdnb_crash: %s[%d] wants kdnb_rwsem (%px) for writing\n", current->comm,
			 task_pid_nr(current), &kdnb_rwsem);
		down_write(&kdnb_rwsem);
		up_write(&kdnb_rwsem);
	} else {
		return -EINVAL;
	}
	return 0;
}

static ssize_t kdnb_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	char cmd[32];
	size_t n = min(len, sizeof(cmd) - 1);
	int ret;

	if (copy_from_user(cmd, buf, n))
		return -EFAULT;
	cmd[n] = '\0';
	strim(cmd);
	ret = kdnb_do(cmd);
	return ret ? ret : len;
}

static const struct proc_ops kdnb_proc_ops = {
	.proc_write = kdnb_write,
};

static int __init kdnb_init(void)
{
	int i;

	INIT_WORK(&kdnb_work, kdnb_wq_fn);
	kdnb_cache = kmem_cache_create("kdnb_obj", sizeof(struct kdnb_obj), 0, 0, kdnb_obj_ctor);
	if (!kdnb_cache)
		return -ENOMEM;
	kdnb_live = kcalloc(live > 0 ? live : 1, sizeof(*kdnb_live), GFP_KERNEL);
	if (!kdnb_live)
		goto nomem;
	for (i = 0; i < live; i++) {
		kdnb_live[i] = kdnb_alloc_obj(i);
		if (!kdnb_live[i])
			goto nomem;
		kdnb_nlive++;
	}
	for (i = 0; i < leak; i++)	/* leaked on purpose: nobody keeps these pointers */
		if (!kdnb_alloc_obj(live + i))
			goto nomem;
	if (!proc_create("kdnb_crash", 0200, NULL, &kdnb_proc_ops))
		goto nomem;
	pr_info("kdnb_crash: loaded, kdnb_obj live=%d leaked=%d\n", live, leak);
	if (action && *action)
		return kdnb_do(action);
	return 0;
nomem:
	while (kdnb_nlive)
		kmem_cache_free(kdnb_cache, kdnb_live[--kdnb_nlive]);
	kfree(kdnb_live);
	kmem_cache_destroy(kdnb_cache);	/* complains if leaked objects remain: fine here */
	return -ENOMEM;
}

static void __exit kdnb_exit(void)
{
	remove_proc_entry("kdnb_crash", NULL);
	while (kdnb_nlive)
		kmem_cache_free(kdnb_cache, kdnb_live[--kdnb_nlive]);
	kfree(kdnb_live);
	if (!leak)
		kmem_cache_destroy(kdnb_cache);
}

module_init(kdnb_init);
module_exit(kdnb_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdnb lab: provoke a known kernel failure");
